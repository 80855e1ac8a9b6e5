// RUN: ember-opt %s --random-weights --pipeline blocked-layout,dce | filecheck %s
// The block is the host's vector width: [1, 2, 6, 6, 8] on AVX2, [1, 1, 6, 6, 16] on AVX-512
// (SHAPE below); `blocked-layout{vector-width=8}` picks one.
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// A chain conv -> relu -> conv (+ residual) runs blocked from one to_blocked of the input to
// one from_blocked of the result: the relu moves behind the reorder, the inner
// from_blocked/to_blocked pair cancels, and the residual (the chain's input) is the same
// blocked value. A conv on 12 channels (not a multiple of 8) and a grouped one stay NCHW.
// CHECK-LABEL: func.func @main
// CHECK:         %[[XB:.*]] = graph.to_blocked %x : tensor<1x16x6x6xf32> -> tensor<1x[[SHAPE:[0-9x]+]]xf32>
// CHECK:         %[[A:.*]] = graph.conv %[[XB]], %w {{.*}} : tensor<1x[[SHAPE]]xf32>, tensor<16x16x3x3xf32> -> tensor<1x[[SHAPE]]xf32>
// CHECK-NEXT:    %[[R:.*]] = graph.relu %[[A]] : tensor<1x[[SHAPE]]xf32> -> tensor<1x[[SHAPE]]xf32>
// CHECK-NEXT:    %[[BC:.*]] = graph.conv %[[R]], %w residual %[[XB]] {{.*}} -> tensor<1x[[SHAPE]]xf32>
// CHECK-NEXT:    %b = graph.from_blocked %[[BC]] : tensor<1x[[SHAPE]]xf32> -> tensor<1x16x6x6xf32>
// CHECK-NEXT:    %u = graph.conv %y, %v {{.*}} : tensor<1x12x6x6xf32>, tensor<16x12x1x1xf32> -> tensor<1x16x6x6xf32>
// CHECK-NEXT:    %g = graph.conv %b, %wg {{.*}} -> tensor<1x16x6x6xf32>
// CHECK-NOT:     graph.to_blocked
// CHECK-NOT:     graph.from_blocked
builtin.module {
  func.func @main(%x: tensor<1x16x6x6xf32>, %y: tensor<1x12x6x6xf32>) -> (tensor<1x16x6x6xf32>, tensor<1x16x6x6xf32>, tensor<1x16x6x6xf32>) {
    %w = graph.constant "w" : tensor<16x16x3x3xf32>
    %v = graph.constant "v" : tensor<16x12x1x1xf32>
    %wg = graph.constant "wg" : tensor<16x8x1x1xf32>
    %a = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x16x6x6xf32>, tensor<16x16x3x3xf32> -> tensor<1x16x6x6xf32>
    %r = graph.relu %a : tensor<1x16x6x6xf32> -> tensor<1x16x6x6xf32>
    %b = graph.conv %r, %w residual %x {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x16x6x6xf32>, tensor<16x16x3x3xf32>, tensor<1x16x6x6xf32> -> tensor<1x16x6x6xf32>
    %u = graph.conv %y, %v {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x12x6x6xf32>, tensor<16x12x1x1xf32> -> tensor<1x16x6x6xf32>
    %g = graph.conv %b, %wg {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 2 : i64} : tensor<1x16x6x6xf32>, tensor<16x8x1x1xf32> -> tensor<1x16x6x6xf32>
    func.return %b, %u, %g : tensor<1x16x6x6xf32>, tensor<1x16x6x6xf32>, tensor<1x16x6x6xf32>
  }
  // A pool and a channel concat of blocked values run blocked too (the concat's inputs are
  // whole channel blocks), and the relu after them: one reorder in, one out.
  // CHECK-LABEL: func.func @pool_concat
  // CHECK:         %[[XB:.*]] = graph.to_blocked %x
  // CHECK:         %[[A:.*]] = graph.conv %[[XB]], %p1
  // CHECK-NEXT:    %[[P:.*]] = graph.max_pool %[[A]] {{.*}} -> tensor<1x[[PS:[0-9x]+]]xf32>
  // CHECK-NEXT:    %[[B:.*]] = graph.conv %[[P]], %p1
  // CHECK-NEXT:    %[[C:.*]] = graph.conv %[[P]], %p1
  // CHECK-NEXT:    %[[CAT:.*]] = graph.concat %[[B]], %[[C]] {axis = 1 : i64} : tensor<1x[[PS]]xf32>, tensor<1x[[PS]]xf32> -> tensor
  // CHECK-NEXT:    %[[R:.*]] = graph.relu %[[CAT]]
  // CHECK-NEXT:    %r = graph.from_blocked %[[R]] {{.*}} -> tensor<1x64x4x4xf32>
  // CHECK-NEXT:    func.return %r
  func.func @pool_concat(%x: tensor<1x32x8x8xf32>) -> tensor<1x64x4x4xf32> {
    %p1 = graph.constant "p1" : tensor<32x32x3x3xf32>
    %a = graph.conv %x, %p1 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x32x8x8xf32>, tensor<32x32x3x3xf32> -> tensor<1x32x8x8xf32>
    %p = graph.max_pool %a {kernel_shape = array<i64: 3, 3>, strides = array<i64: 2, 2>, pads = array<i64: 1, 1, 1, 1>} : tensor<1x32x8x8xf32> -> tensor<1x32x4x4xf32>
    %b = graph.conv %p, %p1 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x32x4x4xf32>, tensor<32x32x3x3xf32> -> tensor<1x32x4x4xf32>
    %c = graph.conv %p, %p1 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x32x4x4xf32>, tensor<32x32x3x3xf32> -> tensor<1x32x4x4xf32>
    %cat = graph.concat %b, %c {axis = 1 : i64} : tensor<1x32x4x4xf32>, tensor<1x32x4x4xf32> -> tensor<1x64x4x4xf32>
    %r = graph.relu %cat : tensor<1x64x4x4xf32> -> tensor<1x64x4x4xf32>
    func.return %r : tensor<1x64x4x4xf32>
  }

  // 1x1 convs doing fewer FLOPs than MIN_FLOPS_PER_REORDERED per element their reorders
  // would move stay NCHW (2 x 16 x 16 x 64 x 2 FLOPs for 2 x 1024 elements: 32 each).
  // CHECK-LABEL: func.func @cheap
  // CHECK-NOT:     graph.to_blocked
  // CHECK:         %a = graph.conv %x, %p2 {{.*}} -> tensor<1x16x8x8xf32>
  // CHECK-NEXT:    %b = graph.conv %a, %p2 {{.*}} -> tensor<1x16x8x8xf32>
  // CHECK-NEXT:    func.return %b
  func.func @cheap(%x: tensor<1x16x8x8xf32>) -> tensor<1x16x8x8xf32> {
    %p2 = graph.constant "p2" : tensor<16x16x1x1xf32>
    %a = graph.conv %x, %p2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x16x8x8xf32>, tensor<16x16x1x1xf32> -> tensor<1x16x8x8xf32>
    %b = graph.conv %a, %p2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x16x8x8xf32>, tensor<16x16x1x1xf32> -> tensor<1x16x8x8xf32>
    func.return %b : tensor<1x16x8x8xf32>
  }
}
