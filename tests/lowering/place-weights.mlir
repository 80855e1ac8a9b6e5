// RUN: ember-opt %s --random-weights --pipeline place-weights | filecheck %s
// The input is kernel IR as convert-graph-to-kernel writes it.

// Every kernel.weight becomes a view of one trailing `weights` argument, at a 64-byte aligned
// offset in order of first use (scale: 5 x 4 bytes at 0, then bias at 64; each padded to 64 bytes); the entry function
// records the layout in ember.weight_offsets for the runtime to build the blob.
// CHECK-LABEL: func.func @main(
// CHECK-SAME:    %[[W:[^:]*]]: memref<128xi8> {ember.role = "weights"})
// CHECK-SAME:    ember.weight_offsets = {scale = 0 : i64, bias = 64 : i64}, ember.weights_bytes = 128 : i64
// CHECK-NOT:     kernel.weight
// CHECK:         %[[AT0:.*]] = arith.constant 0 : index
// CHECK-NEXT:    %scale = memref.view %[[W]][%[[AT0]]][] : memref<128xi8> to memref<5xf32>
// CHECK:         kernel.elementwise(%x, %scale) -> %a
// CHECK:         %[[AT64:.*]] = arith.constant 64 : index
// CHECK-NEXT:    %bias = memref.view %[[W]][%[[AT64]]][] : memref<128xi8> to memref<5xf32>
// A weight named twice is placed once: the second reference views the same offset.
// CHECK:         %[[AGAIN:.*]] = arith.constant 0 : index
// CHECK-NEXT:    %scale_again = memref.view %[[W]][%[[AGAIN]]][] : memref<128xi8> to memref<5xf32>
// CHECK-NEXT:    kernel.elementwise(%b, %scale_again) -> %y
builtin.module {
  func.func @main(%x: memref<2x5xf32>, %y: memref<2x5xf32>) attributes {ember.input_names = ["x"], ember.output_names = ["y"]} {
    %scale = kernel.weight "scale" : memref<5xf32>
    %a = memref.alloc() {alignment = 64 : i64} : memref<2x5xf32>
    kernel.elementwise(%x, %scale) -> %a : (memref<2x5xf32>, memref<5xf32>) -> memref<2x5xf32> {
    ^bb0(%xv: f32, %sv: f32):
      %m = arith.mulf %xv, %sv : f32
      kernel.yield %m : f32
    }
    %bias = kernel.weight "bias" : memref<5xf32>
    %b = memref.alloc() {alignment = 64 : i64} : memref<2x5xf32>
    kernel.elementwise(%a, %bias) -> %b : (memref<2x5xf32>, memref<5xf32>) -> memref<2x5xf32> {
    ^bb0(%av: f32, %bv: f32):
      %s = arith.addf %av, %bv : f32
      kernel.yield %s : f32
    }
    %scale_again = kernel.weight "scale" : memref<5xf32>
    kernel.elementwise(%b, %scale_again) -> %y : (memref<2x5xf32>, memref<5xf32>) -> memref<2x5xf32> {
    ^bb0(%bv2: f32, %sv2: f32):
      %p = arith.mulf %bv2, %sv2 : f32
      kernel.yield %p : f32
    }
    func.return
  }
}
