// RUN: ember-opt %s --random-weights --target-cpu x86-64-v3 --threads 1 \
// RUN:   --pipeline lower-kernels-to-loops | filecheck %s
// kernel.resize_linear of a x2 half_pixel Resize with its column pattern (what the frontend
// imports for outputs wider than 2048 columns) and of an align_corners one with its columns
// listed: the numerics are tests/kernels/test_resize_linear.py's (against onnxruntime).

builtin.module {
  func.func @main(%x: memref<1x1x4x32xf32>, %y: memref<1x1x8x64xf32>, %x2: memref<1x1x3x12xf32>, %y2: memref<1x1x6x24xf32>) attributes {ember.input_names = ["x", "x2"], ember.output_names = ["y", "y2"], ember.input_dtypes = ["float32", "float32"], ember.output_dtypes = ["float32", "float32"]} {
    %indices = kernel.weight "indices" : memref<72x2xi32>
    %weights = kernel.weight "weights" : memref<72x2xf32>
    kernel.resize_linear %x, %indices, %weights -> %y {column_factor = 2 : i64, column_interior = array<i64: 1, 31>, column_offsets = array<i64: -1, 0, 0, 1>, column_weights = array<f32: 2.500000e-01, 7.500000e-01, 7.500000e-01, 2.500000e-01>} : memref<1x1x4x32xf32>, memref<72x2xi32>, memref<72x2xf32> -> memref<1x1x8x64xf32>
    %indices2 = kernel.weight "indices2" : memref<30x2xi32>
    %weights2 = kernel.weight "weights2" : memref<30x2xf32>
    kernel.resize_linear %x2, %indices2, %weights2 -> %y2 {column_factor = 0 : i64, column_interior = array<i64: 0, 0>, column_offsets = array<i64>, column_weights = array<f32>, column_taps = array<i64: 0, 0, 0, 1, 0, 1, 1, 2, 1, 2, 2, 3, 2, 3, 3, 4, 3, 4, 4, 5, 4, 5, 5, 6, 5, 6, 6, 7, 6, 7, 7, 8, 7, 8, 8, 9, 8, 9, 9, 10, 9, 10, 10, 11, 10, 11, 10, 11>, column_tap_weights = array<f32: 0.000000e+00, 1.000000e+00, 0.521739125, 0.478260875, 0.0434782505, 0.956521749, 0.565217376, 0.434782624, 8.695650e-02, 0.913043499, 0.608695745, 0.391304255, 0.130434752, 0.869565248, 6.521740e-01, 3.478260e-01, 1.739130e-01, 8.260870e-01, 6.956520e-01, 3.043480e-01, 0.217391491, 0.782608509, 0.739130497, 0.260869503, 0.260869503, 0.739130497, 0.782608509, 0.217391491, 3.043480e-01, 6.956520e-01, 8.260870e-01, 1.739130e-01, 3.478260e-01, 6.521740e-01, 8.695650e-01, 0.13043499, 0.391304016, 6.086960e-01, 9.130430e-01, 0.0869569778, 0.434782982, 5.652170e-01, 9.565220e-01, 0.0434780121, 4.782610e-01, 5.217390e-01, 0.000000e+00, 1.000000e+00>} : memref<1x1x3x12xf32>, memref<30x2xi32>, memref<30x2xf32> -> memref<1x1x6x24xf32>
    func.return
  }
}

// One loop over output rows; a row of weight 0 is not read (an output row on an input row
// takes a copy of the column loops of its own).
// CHECK-LABEL: func.func private @resize_linear_1(
// CHECK:         scf.for
// CHECK:           arith.cmpf oeq
// CHECK:           arith.cmpf oeq
// CHECK:           scf.if
// The first output column (clamped at the edge) from the tables, one element, each tap 0
// where its weight is 0.
// CHECK:             scf.for
// CHECK:               memref.load {{.*}} : memref<72x2xi32>
// CHECK:               memref.load {{.*}} : memref<72x2xf32>
// CHECK:               arith.cmpf oeq
// CHECK:               arith.select
// Input columns 1 .. 30 (the interior: the pattern 1/4, 3/4 of columns i-1, i / 3/4, 1/4 of
// i, i+1), 8 a step: blended rows, the phases interleaved into two output vectors.
// CHECK:             scf.for
// CHECK:               vector.load {{.*}} : memref<1x1x4x32xf32>, vector<8xf32>
// CHECK:               vector.shuffle %{{.*}}, %{{.*}} [0, 8, 1, 9, 2, 10, 3, 11]
// CHECK-NEXT:          vector.shuffle %{{.*}}, %{{.*}} [4, 12, 5, 13, 6, 14, 7, 15]
// CHECK:               vector.store {{.*}} : memref<1x1x8x64xf32>, vector<8xf32>
// CHECK:               vector.store {{.*}} : memref<1x1x8x64xf32>, vector<8xf32>
// The 6 interior columns left over: one more vector ending at column 31, overlapping the
// last block; then the last output column from the tables.
// CHECK-NEXT:        }
// CHECK:             vector.shuffle %{{.*}}, %{{.*}} [0, 8, 1, 9, 2, 10, 3, 11]
// CHECK:             vector.store {{.*}} : memref<1x1x8x64xf32>, vector<8xf32>
// CHECK:             vector.store {{.*}} : memref<1x1x8x64xf32>, vector<8xf32>
// CHECK-NEXT:        scf.for
// CHECK:               memref.load {{.*}} : memref<72x2xi32>
// A row between two input rows: both read, weighted.
// CHECK:           scf.if
// CHECK:             scf.for
// CHECK:               vector.shuffle

// align_corners 12 -> 24 columns: no pattern, every column's taps listed. Each vector of 8
// output columns (3 of them) is shuffled out of the one or two input vectors its taps span
// and weighted by constant vectors; a lane whose tap weighs 0 is shuffled in from zeros.
// CHECK-LABEL: func.func private @resize_linear_2(
// CHECK:         scf.if
// CHECK-NOT:       scf.for
// CHECK:           vector.load {{.*}} : memref<1x1x3x12xf32>, vector<8xf32>
// CHECK:           vector.shuffle
// CHECK:           arith.mulf {{.*}} : vector<8xf32>
// CHECK:           vector.store {{.*}} : memref<1x1x6x24xf32>, vector<8xf32>
// CHECK:           vector.store {{.*}} : memref<1x1x6x24xf32>, vector<8xf32>
// Output column 23 is input column 11 itself: its tap of weight 0 (column 10) is lane 15,
// a zero.
// CHECK:           vector.shuffle %{{.*}}, %{{.*}} [0, 1, 2, 3, 4, 5, 6, 15]
// CHECK:           vector.store {{.*}} : memref<1x1x6x24xf32>, vector<8xf32>
// CHECK-NOT:       vector.store
// CHECK:           scf.if
