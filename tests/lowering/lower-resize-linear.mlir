// RUN: ember-opt %s --random-weights --target-cpu x86-64-v3 --threads 1 \
// RUN:   --pipeline lower-kernels-to-loops | filecheck %s
// kernel.resize_linear of a x2 half_pixel Resize (what frontend/ops/resize.py imports): the
// numerics are tests/kernels/test_resize_linear.py's (against onnxruntime).

builtin.module {
  func.func @main(%x: memref<1x1x4x32xf32>, %y: memref<1x1x8x64xf32>) attributes {ember.input_names = ["x"], ember.output_names = ["y"], ember.input_dtypes = ["float32"], ember.output_dtypes = ["float32"]} {
    %indices = kernel.weight "indices" : memref<72x2xi32>
    %weights = kernel.weight "weights" : memref<72x2xf32>
    kernel.resize_linear %x, %indices, %weights -> %y {column_factor = 2 : i64, column_interior = array<i64: 1, 31>, column_offsets = array<i64: -1, 0, 0, 1>, column_weights = array<f32: 2.500000e-01, 7.500000e-01, 7.500000e-01, 2.500000e-01>} : memref<1x1x4x32xf32>, memref<72x2xi32>, memref<72x2xf32> -> memref<1x1x8x64xf32>
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
// The 6 interior columns left over, one at a time; then the last output column.
// CHECK:             scf.for
// CHECK:               memref.load {{.*}} : memref<1x1x4x32xf32>
// CHECK:             scf.for
// CHECK:               memref.load {{.*}} : memref<72x2xi32>
// A row between two input rows: both read, weighted.
// CHECK:           scf.if
// CHECK:             scf.for
// CHECK:               vector.shuffle
