// RUN: ember-opt %s --random-weights --pipeline fuse-elementwise | filecheck %s
// The input is kernel IR as convert-graph-to-kernel writes it (the entry function only).

// An elementwise kernel whose buffer only one later elementwise kernel reads, with the same
// shape, is inlined into it: mul -> relu become one kernel, and so do exp -> add.
// CHECK-LABEL: func.func @main(
// CHECK:         %b = memref.alloc()
// CHECK-NEXT:    kernel.elementwise(%x, %scale) -> %b
// CHECK-NEXT:    ^{{.*}}(%[[XV:.*]]: f32, %[[SV:.*]]: f32):
// CHECK-NEXT:      %m = arith.mulf %[[XV]], %[[SV]] : f32
// CHECK:           %r = arith.maximumf %m, %zero : f32
// CHECK-NEXT:      kernel.yield %r : f32
// Left alone: the softmax output is read twice (by exp and by add), so it stays a buffer, an
// input of the fused exp + add.
// CHECK:         %c = memref.alloc()
// CHECK-NEXT:    kernel.softmax %b -> %c
// CHECK-NEXT:    kernel.elementwise(%c) -> %y
// CHECK-NEXT:    ^{{.*}}(%[[CV:.*]]: f32):
// CHECK-NEXT:      %e = math.exp %[[CV]] : f32
// CHECK-NEXT:      %sum = arith.addf %e, %[[CV]] : f32
// Left alone: a producer that writes a function result (not a buffer of its own), and one
// whose 2x1 output the consumer broadcasts.
// CHECK:         kernel.elementwise(%x) -> %z
// CHECK:         kernel.elementwise(%z) -> %w
// CHECK:         %n = memref.alloc() {{.*}} : memref<2x1xf32>
// CHECK-NEXT:    kernel.elementwise(%row) -> %n
// CHECK:         kernel.elementwise(%x, %n) -> %v
// CHECK:         func.return
builtin.module {
  func.func @main(%x: memref<2x8xf32>, %row: memref<2x1xf32>, %y: memref<2x8xf32>, %z: memref<2x8xf32>, %w: memref<2x8xf32>, %v: memref<2x8xf32>) attributes {ember.input_names = ["x", "row"], ember.output_names = ["y", "z", "w", "v"]} {
    %scale = kernel.weight "scale" : memref<8xf32>
    %a = memref.alloc() {alignment = 64 : i64} : memref<2x8xf32>
    kernel.elementwise(%x, %scale) -> %a : (memref<2x8xf32>, memref<8xf32>) -> memref<2x8xf32> {
    ^bb0(%xv: f32, %sv: f32):
      %m = arith.mulf %xv, %sv : f32
      kernel.yield %m : f32
    }
    %b = memref.alloc() {alignment = 64 : i64} : memref<2x8xf32>
    kernel.elementwise(%a) -> %b : (memref<2x8xf32>) -> memref<2x8xf32> {
    ^bb0(%av: f32):
      %zero = arith.constant 0.000000e+00 : f32
      %r = arith.maximumf %av, %zero : f32
      kernel.yield %r : f32
    }
    %c = memref.alloc() {alignment = 64 : i64} : memref<2x8xf32>
    kernel.softmax %b -> %c {axis = 1 : i64} : memref<2x8xf32> -> memref<2x8xf32>
    %d = memref.alloc() {alignment = 64 : i64} : memref<2x8xf32>
    kernel.elementwise(%c) -> %d : (memref<2x8xf32>) -> memref<2x8xf32> {
    ^bb0(%cv: f32):
      %e = math.exp %cv : f32
      kernel.yield %e : f32
    }
    kernel.elementwise(%d, %c) -> %y : (memref<2x8xf32>, memref<2x8xf32>) -> memref<2x8xf32> {
    ^bb0(%dv: f32, %cv2: f32):
      %sum = arith.addf %dv, %cv2 : f32
      kernel.yield %sum : f32
    }
    kernel.elementwise(%x) -> %z : (memref<2x8xf32>) -> memref<2x8xf32> {
    ^bb0(%xv2: f32):
      %t = math.tanh %xv2 : f32
      kernel.yield %t : f32
    }
    kernel.elementwise(%z) -> %w : (memref<2x8xf32>) -> memref<2x8xf32> {
    ^bb0(%zv: f32):
      %ez = math.exp %zv : f32
      kernel.yield %ez : f32
    }
    %n = memref.alloc() {alignment = 64 : i64} : memref<2x1xf32>
    kernel.elementwise(%row) -> %n : (memref<2x1xf32>) -> memref<2x1xf32> {
    ^bb0(%rv: f32):
      %nr = arith.negf %rv : f32
      kernel.yield %nr : f32
    }
    kernel.elementwise(%x, %n) -> %v : (memref<2x8xf32>, memref<2x1xf32>) -> memref<2x8xf32> {
    ^bb0(%xv3: f32, %nv: f32):
      %sv2 = arith.subf %xv3, %nv : f32
      kernel.yield %sv2 : f32
    }
    func.return
  }
}
