// RUN: ember-opt %s --random-weights --pipeline fuse-residual-add,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// conv + a later-defined operand: the conv moves after that operand and takes it as residual;
// a conv whose result has another use stays unfused.
// CHECK-LABEL: func.func @main(%x: tensor<1x4x5x5xf32>)
// CHECK:         %r = graph.relu %x
// CHECK-NEXT:    %y = graph.conv %x, %w residual %r
// CHECK-NEXT:    %u = graph.conv %x, %w {{.*}}-> tensor<1x4x5x5xf32>
// CHECK-NEXT:    %v = graph.add %u, %x
builtin.module {
  func.func @main(%x: tensor<1x4x5x5xf32>) -> (tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>) {
    %w = graph.constant "w" : tensor<4x4x3x3xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x4x5x5xf32>, tensor<4x4x3x3xf32> -> tensor<1x4x5x5xf32>
    %r = graph.relu %x : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %y = graph.add %c, %r : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %u = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x4x5x5xf32>, tensor<4x4x3x3xf32> -> tensor<1x4x5x5xf32>
    %v = graph.add %u, %x : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    func.return %y, %v, %u : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>
  }
}
