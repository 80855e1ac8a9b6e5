// RUN: ember-opt %s --random-weights --target-cpu x86-64-v3 --threads 1 \
// RUN:   --pipeline lower-kernels-to-loops | filecheck %s
// Runtime extents (issue 10, foundation; dialects/extents.py): kernels on buffers with `?`
// rows. Each kernel function takes the size of every `?` dim of its memrefs as an `index`
// argument after them, marked with the memref and dim it sizes; each call passes
// `memref.dim` of its operands there. Numerics at many sizes: tests/kernels/
// test_runtime_extents.py.
// CHECK-LABEL: func.func @main(
// CHECK:         %[[X_ROWS:[0-9]+]] = memref.dim %x, %{{.*}} : memref<?x64xf32>
// CHECK:         %[[E_ROWS:[0-9]+]] = memref.dim %e, %{{.*}} : memref<?x64xf32>
// CHECK-NEXT:    func.call @elementwise_1(%x, %e, %[[X_ROWS]], %[[E_ROWS]]) : (memref<?x64xf32>, memref<?x64xf32>, index, index) -> ()
// CHECK:         func.call @matmul_1(%e, %w, %y, %{{.*}}, %{{.*}}) : (memref<?x64xf32>, memref<3x64x16xf32>, memref<?x40xf32>, index, index) -> ()

// Elementwise: one flat loop over the run-time element count (rows x 64): 8 lanes a step,
// then a scalar remainder.
// CHECK-LABEL: func.func private @elementwise_1(
// CHECK-SAME:    %{{.*}}: index {ember.extent_of = array<i64: 0, 0>}, %{{.*}}: index {ember.extent_of = array<i64: 1, 0>})
// CHECK:         %[[ROWS:.*]] = memref.dim %1, %{{.*}} : memref<?x64xf32>
// CHECK-NEXT:    %[[N:.*]] = arith.muli %[[ROWS]], %{{.*}} : index
// CHECK-NEXT:    memref.reinterpret_cast %0 to offset: [0], sizes: [%[[N]]], strides: [1] : memref<?x64xf32> to memref<?xf32>
// CHECK:         scf.for
// CHECK:           vector.load {{.*}} : memref<?xf32>, vector<8xf32>
// CHECK:         scf.for
// CHECK:           memref.load {{.*}} : memref<?xf32>

// The GEMM with run-time rows: B packed at compile time; work units (3 panels x M chunks
// counted at run time) under scf.parallel; each chunk's full 6-row tiles (AVX2) in a loop
// bounded by rows / 6, then (last chunk) the remainder as one tile of 1, 2, 3, 4 or 6
// rows (gemm_common.remainder_heights), the smallest that holds it; the 6-row tile (for a
// remainder of 5) stores its last row only when it exists.
// CHECK-LABEL: func.func private @matmul_1(
// CHECK-SAME:    ember.kernel_summary = "matmul ?x64 @ 64x40 (packed B, rows at run time)"
// CHECK:         %[[M:.*]] = memref.dim %2, %{{.*}} : memref<?x40xf32>
// CHECK:         "scf.parallel"
// CHECK:         %[[FULL:.*]] = arith.divui %[[M]], %{{.*}} : index
// CHECK:         %[[LAST:.*]] = arith.minsi %{{.*}}, %[[FULL]] : index
// CHECK-NEXT:    scf.for %{{.*}} = %{{.*}} to %[[LAST]]
// CHECK:         %[[REST:.*]] = arith.remui %[[M]], %{{.*}} : index
// CHECK-COUNT-5: arith.cmpi sle, %[[REST]]
// CHECK:         arith.cmpi slt, %{{.*}}, %[[REST]] : index
// CHECK:         func.return
builtin.module {
  func.func @main(%x: memref<?x64xf32>, %y: memref<?x40xf32>, %n: index {ember.extent_of = array<i64: 0, 0, 1, 0>}) attributes {ember.input_names = ["x"], ember.output_names = ["y"]} {
    %c0 = arith.constant 0 : index
    %rows = memref.dim %x, %c0 : memref<?x64xf32>
    %e = memref.alloc(%rows) : memref<?x64xf32>
    kernel.elementwise(%x) -> %e : (memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32):
      %t = math.tanh %v : f32
      kernel.yield %t : f32
    }
    %w = kernel.weight "w.packed.gemm_b_panel16" : memref<3x64x16xf32>
    kernel.matmul %e, %w -> %y {weight_layout = "gemm_b_panel16"} : memref<?x64xf32>, memref<3x64x16xf32> -> memref<?x40xf32>
    func.return
  }
}
