// RUN: ember-opt %s --random-weights --pipeline dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

builtin.module {
  // dce is xDSL's generic deadness: conv, matmul, pools, softmax are `Pure` like every graph op.
  // CHECK-LABEL: func.func @unused_graph_ops(
  // CHECK-NEXT:    %r = graph.relu %a
  // CHECK-NEXT:    func.return %r
  func.func @unused_graph_ops(%x: tensor<1x2x4x4xf32>, %a: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %w = graph.constant "w" : tensor<2x2x3x3xf32>
    %b = graph.constant "b" : tensor<3x5xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x2x4x4xf32>, tensor<2x2x3x3xf32> -> tensor<1x2x4x4xf32>
    %m = graph.matmul %a, %b : tensor<2x3xf32>, tensor<3x5xf32> -> tensor<2x5xf32>
    %p = graph.max_pool %x {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>} : tensor<1x2x4x4xf32> -> tensor<1x2x2x2xf32>
    %s = graph.softmax %a {axis = 1 : i64} : tensor<2x3xf32> -> tensor<2x3xf32>
    %r = graph.relu %a : tensor<2x3xf32> -> tensor<2x3xf32>
    func.return %r : tensor<2x3xf32>
  }

  // After bufferization: an unused weight view goes; a kernel op writing its output stays
  // (no declared memory effects = unknown effects = live).
  // CHECK-LABEL: func.func @buffers(
  // CHECK-NEXT:    %w = kernel.weight "kw"
  // CHECK-NEXT:    kernel.copy %w -> %y
  // CHECK-NEXT:    func.return
  func.func @buffers(%x: memref<4xf32>, %y: memref<4xf32>) {
    %w = kernel.weight "kw" : memref<4xf32>
    %u = kernel.weight "unused" : memref<4xf32>
    %v = kernel.reshape %x : memref<4xf32> to memref<2x2xf32>
    kernel.copy %w -> %y : memref<4xf32> -> memref<4xf32>
    func.return
  }
}
