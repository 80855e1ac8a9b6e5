// RUN: ember-opt %s --random-weights --pipeline fuse-bias-add,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// A constant add after conv (either operand order) or matmul becomes the op's bias.
// CHECK-LABEL: func.func @main(
// CHECK:         %[[K:.*]] = graph.constant "k.bias" : tensor<4xf32>
// CHECK:         %y = graph.conv %x, %w bias %[[K]]
// CHECK:         %[[KB:.*]] = graph.constant "kb.bias" : tensor<5xf32>
// CHECK:         %z = graph.matmul %a, %bm bias %[[KB]]
// CHECK-NOT:     graph.add
builtin.module {
  func.func @main(%x: tensor<1x3x5x5xf32>, %a: tensor<2x6xf32>) -> (tensor<1x4x5x5xf32>, tensor<2x5xf32>) {
    %w = graph.constant "w" : tensor<4x3x3x3xf32>
    %k = graph.constant "k" : tensor<1x4x1x1xf32>
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %kb = graph.constant "kb" : tensor<1x5xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32> -> tensor<1x4x5x5xf32>
    %y = graph.add %k, %c : tensor<1x4x1x1xf32>, tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    %z = graph.add %m, %kb : tensor<2x5xf32>, tensor<1x5xf32> -> tensor<2x5xf32>
    func.return %y, %z : tensor<1x4x5x5xf32>, tensor<2x5xf32>
  }
}
