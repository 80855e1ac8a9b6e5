// RUN: ember-opt %s --random-weights --target-cpu x86-64-v3 --threads 1 \
// RUN:   --pipeline plan-memory | filecheck %s
// The input is kernel IR as convert-graph-to-kernel writes it.

// Every intermediate buffer becomes a view at an offset of one `arena` argument; buffers
// whose lifetimes do not overlap share bytes. ember.intermediate_bytes: the sum of the
// buffers (4 x 512 + 3 x 1024 bytes); ember.arena_bytes: what the plan needs (2048).
// CHECK-LABEL: func.func @main(
// CHECK-SAME:    %[[ARENA:[^:]*]]: memref<2048xi8> {ember.role = "arena"})
// CHECK-SAME:    ember.arena_bytes = 2048 : i64, ember.intermediate_bytes = 5120 : i64
// CHECK-NOT:     memref.alloc

// Not in place: the conv reads all of %e's channels at a pixel before writing any of them, so
// its output may not overwrite %e although %e dies there (both 512-byte buffers live at once).
// CHECK:         %[[E_AT:.*]] = arith.constant 0 : index
// CHECK-NEXT:    %[[E:.*]] = memref.view %[[ARENA]][%[[E_AT]]][] : memref<2048xi8> to memref<1x8x4x4xf32>
// CHECK-NEXT:    kernel.elementwise(%x) -> %[[E]]
// CHECK:         %[[C_AT:.*]] = arith.constant 512 : index
// CHECK-NEXT:    %[[C:.*]] = memref.view %[[ARENA]][%[[C_AT]]][]
// CHECK-NEXT:    kernel.conv2d %[[E]], %w bias %bias residual %[[E]] -> %[[C]]

// A chain of softmaxes ping-pongs between two 1 KiB slots: at most two buffers are alive.
// CHECK:         arith.constant 0 : index
// CHECK-NEXT:    %[[A:.*]] = memref.view %[[ARENA]]
// CHECK-NEXT:    kernel.softmax %s -> %[[A]]
// CHECK-NEXT:    arith.constant 1024 : index
// CHECK-NEXT:    %[[B:.*]] = memref.view %[[ARENA]]
// CHECK-NEXT:    kernel.softmax %[[A]] -> %[[B]]
// CHECK-NEXT:    arith.constant 0 : index
// CHECK-NEXT:    %[[D:.*]] = memref.view %[[ARENA]]
// CHECK-NEXT:    kernel.softmax %[[B]] -> %[[D]]
// CHECK-NEXT:    kernel.softmax %[[D]] -> %t

// In place: the conv's output goes over its residual %r, which dies there (each residual
// element is read just before the output element is written), at exactly %r's offset.
// CHECK:         %[[R_AT:.*]] = arith.constant [[R_OFFSET:[0-9]+]] : index
// CHECK-NEXT:    %[[R:.*]] = memref.view %[[ARENA]][%[[R_AT]]][]
// CHECK-NEXT:    kernel.elementwise(%x) -> %[[R]]
// CHECK:         %[[F_AT:.*]] = arith.constant [[R_OFFSET]] : index
// CHECK-NEXT:    %[[F:.*]] = memref.view %[[ARENA]][%[[F_AT]]][]
// CHECK-NEXT:    kernel.conv2d %x, %w bias %bias residual %[[R]] -> %[[F]]
builtin.module {
  func.func @main(%x: memref<1x8x4x4xf32>, %s: memref<256xf32>, %y: memref<1x8x4x4xf32>, %t: memref<256xf32>, %v: memref<1x8x4x4xf32>) attributes {ember.input_names = ["x", "s"], ember.output_names = ["y", "t", "v"]} {
    %e = memref.alloc() {alignment = 64 : i64} : memref<1x8x4x4xf32>
    kernel.elementwise(%x) -> %e : (memref<1x8x4x4xf32>) -> memref<1x8x4x4xf32> {
    ^bb0(%xv: f32):
      %ex = math.exp %xv : f32
      kernel.yield %ex : f32
    }
    %w = kernel.weight "w.packed.conv_a_panel6" : memref<1x2x8x6xf32>
    %bias = kernel.weight "bias" : memref<8xf32>
    %c = memref.alloc() {alignment = 64 : i64} : memref<1x8x4x4xf32>
    kernel.conv2d %e, %w bias %bias residual %e -> %c {kernel_shape = array<i64: 1, 1>, strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, weight_layout = "conv_a_panel6"} : memref<1x8x4x4xf32>, memref<1x2x8x6xf32>, memref<8xf32>, memref<1x8x4x4xf32> -> memref<1x8x4x4xf32>
    kernel.elementwise(%c) -> %y : (memref<1x8x4x4xf32>) -> memref<1x8x4x4xf32> {
    ^bb0(%cv: f32):
      %ec = math.exp %cv : f32
      kernel.yield %ec : f32
    }
    %a = memref.alloc() {alignment = 64 : i64} : memref<256xf32>
    kernel.softmax %s -> %a {axis = 0 : i64} : memref<256xf32> -> memref<256xf32>
    %b = memref.alloc() {alignment = 64 : i64} : memref<256xf32>
    kernel.softmax %a -> %b {axis = 0 : i64} : memref<256xf32> -> memref<256xf32>
    %d = memref.alloc() {alignment = 64 : i64} : memref<256xf32>
    kernel.softmax %b -> %d {axis = 0 : i64} : memref<256xf32> -> memref<256xf32>
    kernel.softmax %d -> %t {axis = 0 : i64} : memref<256xf32> -> memref<256xf32>
    %r = memref.alloc() {alignment = 64 : i64} : memref<1x8x4x4xf32>
    kernel.elementwise(%x) -> %r : (memref<1x8x4x4xf32>) -> memref<1x8x4x4xf32> {
    ^bb0(%xv2: f32):
      %neg = arith.negf %xv2 : f32
      kernel.yield %neg : f32
    }
    %f = memref.alloc() {alignment = 64 : i64} : memref<1x8x4x4xf32>
    kernel.conv2d %x, %w bias %bias residual %r -> %f {kernel_shape = array<i64: 1, 1>, strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, weight_layout = "conv_a_panel6"} : memref<1x8x4x4xf32>, memref<1x2x8x6xf32>, memref<8xf32>, memref<1x8x4x4xf32> -> memref<1x8x4x4xf32>
    kernel.elementwise(%f) -> %v : (memref<1x8x4x4xf32>) -> memref<1x8x4x4xf32> {
    ^bb0(%fv: f32):
      %tf = math.tanh %fv : f32
      kernel.yield %tf : f32
    }
    func.return
  }
}
