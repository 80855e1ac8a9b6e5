// RUN: ember-opt %s --random-weights --target-cpu x86-64-v3 --threads 1 \
// RUN:   --pipeline convert-graph-to-kernel | filecheck %s
// The kernels' numerics: tests/kernels/ (each kernel against onnxruntime).

// Tensors become buffers: the entry function takes its results as trailing memref arguments,
// an intermediate gets an aligned memref.alloc, each graph op becomes a kernel op (elementwise
// ops a kernel.elementwise with their scalar body), and the last op writes straight into the
// result argument (no copy).
// CHECK-LABEL: func.func @main(
// CHECK-SAME:    %[[X:.*]]: memref<2x8xf32>, %[[OUT:.*]]: memref<2x8xf32>)
// CHECK:         %[[S:.*]] = kernel.weight "scale" : memref<8xf32>
// CHECK:         %[[A:.*]] = memref.alloc() {alignment = 64 : i64} : memref<2x8xf32>
// CHECK:         kernel.elementwise(%[[X]], %[[S]]) -> %[[A]]
// CHECK:           arith.mulf
// CHECK:         kernel.elementwise(%[[A]])
// CHECK:           arith.maximumf
// CHECK:         kernel.softmax
// CHECK:         kernel.elementwise
// CHECK:           math.exp
// CHECK:         kernel.elementwise({{.*}}) -> %[[OUT]]
// CHECK-NOT:     kernel.copy
// CHECK:         func.return

// Ops converted generically keep their operands and properties.
// CHECK-LABEL: func.func @generic_ops(
// CHECK-SAME:    %[[X:.*]]: memref<2x8xf32>, %[[S:.*]]: memref<8xf32>, %[[N:.*]]: memref<2x8xf32>, %[[C:.*]]: memref<2x8xf32>)
// CHECK-NEXT:    kernel.layer_norm %[[X]], %[[S]] -> %[[N]] {axis = 1 : i64, epsilon = 1.000000e-05 : f32}
// CHECK-NEXT:    kernel.cumsum %[[N]] -> %[[C]] {axis = 1 : i64, exclusive = 0 : i64, reverse = 1 : i64, product}
// CHECK-NEXT:    func.return

// A matmul's constant B is packed for the kernel at compile time: AVX2 (x86-64-v3) panels of
// 2 x 8 columns, 40 columns -> 3 panels of 16 (the last one zero-padded).
// CHECK-LABEL: func.func @packed_matmul(
// CHECK-SAME:    %[[A:.*]]: memref<2x8xf32>, %[[Z:.*]]: memref<2x40xf32>)
// CHECK-NEXT:    %[[B:.*]] = kernel.weight "b.packed.gemm_b_panel16" : memref<3x8x16xf32>
// CHECK-NEXT:    kernel.matmul %[[A]], %[[B]] -> %[[Z]] {weight_layout = "gemm_b_panel16"}

// Not written in place: a result that is the function's input, or a value returned twice,
// is copied into its result buffer.
// CHECK-LABEL: func.func @returns_its_input(
// CHECK-SAME:    %[[X:.*]]: memref<2x8xf32>, %[[R0:.*]]: memref<2x8xf32>, %[[R1:.*]]: memref<2x8xf32>)
// CHECK:         kernel.elementwise(%[[X]]) -> %[[R1]]
// CHECK:         kernel.copy %[[X]] -> %[[R0]]
// CHECK-LABEL: func.func @same_result_twice(
// CHECK-SAME:    %[[X:.*]]: memref<2x8xf32>, %[[R0:.*]]: memref<2x8xf32>, %[[R1:.*]]: memref<2x8xf32>)
// CHECK:         kernel.elementwise(%[[X]]) -> %[[R0]]
// CHECK:         kernel.copy %[[R0]] -> %[[R1]]
builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> attributes {ember.input_names = ["x"], ember.output_names = ["y"]} {
    %s = graph.constant "scale" : tensor<8xf32>
    %a = graph.mul %x, %s : tensor<2x8xf32>, tensor<8xf32> -> tensor<2x8xf32>
    %b = graph.relu %a : tensor<2x8xf32> -> tensor<2x8xf32>
    %c = graph.softmax %b {axis = 1 : i64} : tensor<2x8xf32> -> tensor<2x8xf32>
    %d = graph.exp %c : tensor<2x8xf32> -> tensor<2x8xf32>
    %e = graph.add %d, %c : tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x8xf32>
    func.return %e : tensor<2x8xf32>
  }
  func.func @generic_ops(%x: tensor<2x8xf32>, %s: tensor<8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>) {
    %n = graph.layer_norm %x, %s {axis = 1 : i64, epsilon = 1.0e-05 : f32} : tensor<2x8xf32>, tensor<8xf32> -> tensor<2x8xf32>
    %c = graph.cumsum %n {axis = 1 : i64, exclusive = 0 : i64, reverse = 1 : i64, product} : tensor<2x8xf32> -> tensor<2x8xf32>
    func.return %n, %c : tensor<2x8xf32>, tensor<2x8xf32>
  }
  func.func @packed_matmul(%a: tensor<2x8xf32>) -> tensor<2x40xf32> {
    %b = graph.constant "b" : tensor<8x40xf32>
    %z = graph.matmul %a, %b : tensor<2x8xf32>, tensor<8x40xf32> -> tensor<2x40xf32>
    func.return %z : tensor<2x40xf32>
  }
  func.func @returns_its_input(%x: tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>) {
    %a = graph.relu %x : tensor<2x8xf32> -> tensor<2x8xf32>
    func.return %x, %a : tensor<2x8xf32>, tensor<2x8xf32>
  }
  func.func @same_result_twice(%x: tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>) {
    %a = graph.relu %x : tensor<2x8xf32> -> tensor<2x8xf32>
    func.return %a, %a : tensor<2x8xf32>, tensor<2x8xf32>
  }
  // Channel-blocked values (blocked-layout): a reorder is one kernel.transpose of
  // [N, C/c, c, H*W] and [N, C/c, H*W, c] views, the from_blocked writing straight into the
  // result argument; a blocked conv's filter is packed for the channel-lanes kernel.
  // CHECK-LABEL: func.func @blocked_chain(
  // CHECK-SAME:    %[[X:.*]]: memref<1x16x4x4xf32>, %[[OUT:.*]]: memref<1x16x4x4xf32>)
  // CHECK:         %[[XB:.*]] = memref.alloc() {alignment = 64 : i64} : memref<1x2x4x4x8xf32>
  // CHECK-NEXT:    %[[XV:.*]] = kernel.reshape %[[X]] : memref<1x16x4x4xf32> to memref<1x2x8x16xf32>
  // CHECK-NEXT:    %[[XBV:.*]] = kernel.reshape %[[XB]] : memref<1x2x4x4x8xf32> to memref<1x2x16x8xf32>
  // CHECK-NEXT:    kernel.transpose %[[XV]] -> %[[XBV]] {perm = array<i64: 0, 1, 3, 2>}
  // CHECK-NEXT:    %[[W:.*]] = kernel.weight "wb.packed.conv_lanes_panel16" : memref<1x144x16xf32>
  // CHECK-NEXT:    %[[YB:.*]] = memref.alloc() {alignment = 64 : i64} : memref<1x2x4x4x8xf32>
  // CHECK-NEXT:    kernel.conv2d %[[XB]], %[[W]] -> %[[YB]] {{.*}} weight_layout = "conv_lanes_panel16"} : memref<1x2x4x4x8xf32>, memref<1x144x16xf32> -> memref<1x2x4x4x8xf32>
  // CHECK-NEXT:    %[[YV:.*]] = kernel.reshape %[[YB]] : memref<1x2x4x4x8xf32> to memref<1x2x16x8xf32>
  // CHECK-NEXT:    %[[OV:.*]] = kernel.reshape %[[OUT]] : memref<1x16x4x4xf32> to memref<1x2x8x16xf32>
  // CHECK-NEXT:    kernel.transpose %[[YV]] -> %[[OV]] {perm = array<i64: 0, 1, 3, 2>}
  // CHECK-NEXT:    func.return
  func.func @blocked_chain(%x: tensor<1x16x4x4xf32>) -> tensor<1x16x4x4xf32> {
    %w = graph.constant "wb" : tensor<16x16x3x3xf32>
    %xb = graph.to_blocked %x : tensor<1x16x4x4xf32> -> tensor<1x2x4x4x8xf32>
    %yb = graph.conv %xb, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x2x4x4x8xf32>, tensor<16x16x3x3xf32> -> tensor<1x2x4x4x8xf32>
    %y = graph.from_blocked %yb : tensor<1x2x4x4x8xf32> -> tensor<1x16x4x4xf32>
    func.return %y : tensor<1x16x4x4xf32>
  }
}
