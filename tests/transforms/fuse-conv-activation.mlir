// RUN: ember-opt %s --random-weights --pipeline fuse-conv-activation,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// One activation fuses into the conv/matmul before it (with its parameters); a second one
// after it stays a separate op.
// CHECK-LABEL: func.func @main(
// CHECK:         %y = graph.conv %x, %w {{.*}}activation = "clip", activation_params = array<f32: 0.000000e+00, 6.000000e+00>
// CHECK:         %e = graph.conv %x, %w {{.*}}activation = "leaky_relu", activation_params = array<f32: 1.000000e-01>
// CHECK:         %f = graph.sigmoid %e
// CHECK:         %z = graph.matmul %a, %bm {activation = "relu"}
builtin.module {
  func.func @main(%x: tensor<1x3x5x5xf32>, %a: tensor<2x6xf32>) -> (tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<2x5xf32>) {
    %w = graph.constant "w" : tensor<4x3x3x3xf32>
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32> -> tensor<1x4x5x5xf32>
    %y = graph.clip %c {min = 0.0 : f32, max = 6.0 : f32} : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %d = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32> -> tensor<1x4x5x5xf32>
    %e = graph.leaky_relu %d {alpha = 0.1 : f32} : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %f = graph.sigmoid %e : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    %z = graph.relu %m : tensor<2x5xf32> -> tensor<2x5xf32>
    func.return %y, %f, %z : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<2x5xf32>
  }
}
