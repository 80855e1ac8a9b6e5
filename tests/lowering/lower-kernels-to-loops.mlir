// RUN: ember-opt %s --random-weights --target-cpu x86-64-v3 --threads 2 \
// RUN:   --pipeline lower-kernels-to-loops | filecheck %s
// The input is kernel IR (its weights still kernel.weight ops: lowering does not need
// place-weights); the kernels' numerics: tests/kernels/ (each kernel against onnxruntime).

// Each kernel op becomes a call of a private function of scf loops on memrefs and vectors;
// the entry function gets a trailing `status` argument for the kernels' error reports.
// CHECK-LABEL: func.func @main(
// CHECK-SAME:    memref<8xi64> {ember.role = "status"})
// CHECK:         func.call @elementwise_1(%t, %u)
// CHECK:         func.call @matmul_1(%a, %b, %z)
// CHECK:         func.call @matmul_2(%c, %d, %v)
// CHECK-NOT:     kernel.

// Elementwise: 8 float lanes a step (AVX2) over the flattened buffer, then a scalar loop for
// the 2 elements left of 10.
// CHECK-LABEL: func.func private @elementwise_1(
// CHECK:         scf.for
// CHECK-NEXT:      %[[V:.*]] = vector.load {{.*}} : memref<10xf32>, vector<8xf32>
// CHECK-NEXT:      %[[E:.*]] = math.exp %[[V]] : vector<8xf32>
// CHECK-NEXT:      vector.store %[[E]], {{.*}} : memref<10xf32>, vector<8xf32>
// CHECK:         scf.for
// CHECK-NEXT:      memref.load {{.*}} : memref<10xf32>
// CHECK-NEXT:      math.exp {{.*}} : f32

// A matmul of 2 x 64 x 64 x 64 flops: work units (B panels x M chunks) under scf.parallel for
// the thread pool, each a register tile of vector FMAs on the packed B panels.
// CHECK-LABEL: func.func private @matmul_1(
// CHECK-SAME:    memref<64x64xf32>, %{{.*}}: memref<4x64x16xf32>, %{{.*}}: memref<64x64xf32>)
// CHECK:         "scf.parallel"
// CHECK:         vector.load {{.*}} : memref<4x64x16xf32>, vector<8xf32>
// CHECK:         vector.fma {{.*}} : vector<8xf32>
// CHECK:         vector.store {{.*}} : memref<64x64xf32>, vector<8xf32>

// Not parallel: a product this small (2 x 2 x 8 x 40 flops) finishes before a second thread
// starts, so it runs on the calling thread (scf.for), still with vector FMAs.
// CHECK-LABEL: func.func private @matmul_2(
// CHECK-NOT:     scf.parallel
// CHECK:         vector.fma {{.*}} : vector<8xf32>
// CHECK-NOT:     scf.parallel
// CHECK:         func.return
builtin.module {
  func.func @main(%t: memref<2x5xf32>, %a: memref<64x64xf32>, %c: memref<2x8xf32>, %u: memref<2x5xf32>, %z: memref<64x64xf32>, %v: memref<2x40xf32>) attributes {ember.input_names = ["t", "a", "c"], ember.output_names = ["u", "z", "v"]} {
    kernel.elementwise(%t) -> %u : (memref<2x5xf32>) -> memref<2x5xf32> {
    ^bb0(%tv: f32):
      %e = math.exp %tv : f32
      kernel.yield %e : f32
    }
    %b = kernel.weight "b.packed.gemm_b_panel16" : memref<4x64x16xf32>
    kernel.matmul %a, %b -> %z {weight_layout = "gemm_b_panel16"} : memref<64x64xf32>, memref<4x64x16xf32> -> memref<64x64xf32>
    %d = kernel.weight "d.packed.gemm_b_panel16" : memref<3x8x16xf32>
    kernel.matmul %c, %d -> %v {weight_layout = "gemm_b_panel16"} : memref<2x8xf32>, memref<3x8x16xf32> -> memref<2x40xf32>
    func.return
  }
}
