builtin.module {
  func.func @main(%x: tensor<1x3x8x8xf32>) -> tensor<1x5xf32> attributes {ember.input_names = ["x"], ember.output_names = ["y"], ember.input_dtypes = ["float32"], ember.output_dtypes = ["float32"]} {
    %w1 = graph.constant "w1" : tensor<4x3x3x3xf32>
    %b1 = graph.constant "b1" : tensor<4xf32>
    %c1 = graph.conv %x, %w1 bias %b1 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32> -> tensor<1x4x8x8xf32>
    %r1 = graph.relu %c1 : tensor<1x4x8x8xf32> -> tensor<1x4x8x8xf32>
    %p1 = graph.max_pool %r1 {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>} : tensor<1x4x8x8xf32> -> tensor<1x4x4x4xf32>
    %w2 = graph.constant "w2" : tensor<4x4x1x1xf32>
    %c2 = graph.conv %p1, %w2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x4x4x4xf32>, tensor<4x4x1x1xf32> -> tensor<1x4x4x4xf32>
    %s2 = graph.add %c2, %p1 : tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32> -> tensor<1x4x4x4xf32>
    %g = graph.reduce %s2 {reduction = "mean", axes = array<i64: 2, 3>, keepdims = 1 : i64} : tensor<1x4x4x4xf32> -> tensor<1x4x1x1xf32>
    %f = graph.reshape %g : tensor<1x4x1x1xf32> -> tensor<1x4xf32>
    %w3 = graph.constant "w3" : tensor<5x4xf32>
    %b3 = graph.constant "b3" : tensor<3x1xf32>
    %y = graph.gemm %f, %w3, %b3 {alpha = 1.000000e+00 : f32, beta = 1.000000e+00 : f32, trans_a = 0 : i64, trans_b = 1 : i64} : tensor<1x4xf32>, tensor<5x4xf32>, tensor<3x1xf32> -> tensor<1x5xf32>
    func.return %y : tensor<1x5xf32>
  }
}
