// RUN: ember-opt %s --random-weights --target-cpu x86-64-v4 --threads 1 \
// RUN:   --pipeline 'convert-graph-to-kernel,plan-memory,place-weights,lower-kernels-to-loops' \
// RUN:   | filecheck %s --check-prefix=TARGET
// RUN: ember-opt %s --random-weights --target-cpu x86-64-v4 --threads 1 \
// RUN:   --pipeline 'convert-graph-to-kernel,plan-memory,place-weights,lower-kernels-to-loops{vector-width=8}' \
// RUN:   | filecheck %s --check-prefix=LOOPS8
// RUN: ember-opt %s --random-weights --target-cpu x86-64-v4 --threads 1 \
// RUN:   --pipeline 'convert-graph-to-kernel{vector-width=8}' | filecheck %s --check-prefix=PACK8
// An option set to the target's own value changes nothing:
// RUN: ember-opt %s --random-weights --target-cpu x86-64-v4 --threads 1 \
// RUN:   --pipeline 'convert-graph-to-kernel,plan-memory,place-weights,lower-kernels-to-loops{vector-width=16}' \
// RUN:   | filecheck %s --check-prefix=TARGET

// Pass options override the compile target's values for one pass (passes/options.py). The
// target here is AVX-512: 16 float32 lanes a vector, matmul B packed in panels of 2 x 16.

// TARGET-LABEL: func.func private @elementwise_1(
// TARGET:         vector.load {{.*}} : memref<256xf32>, vector<16xf32>
// TARGET-NOT:     vector<8xf32>
// TARGET-LABEL: func.func private @matmul_1(
// TARGET-SAME:    memref<2x8x32xf32>

// lower-kernels-to-loops{vector-width=8}: the kernels compute 8 lanes at a time (AVX2 code);
// the packing, done before by convert-graph-to-kernel for the target, is unchanged.
// LOOPS8-LABEL: func.func private @elementwise_1(
// LOOPS8:         vector.load {{.*}} : memref<256xf32>, vector<8xf32>
// LOOPS8-NOT:     vector<16xf32>
// LOOPS8-LABEL: func.func private @matmul_1(
// LOOPS8-SAME:    memref<2x8x32xf32>
// LOOPS8-NOT:     vector<16xf32>

// convert-graph-to-kernel{vector-width=8}: B packed in panels of 2 x 8 columns.
// PACK8: kernel.matmul {{.*}}weight_layout = "gemm_b_panel16"
// PACK8-SAME: memref<3x8x16xf32>

builtin.module {
  func.func @main(%x: tensor<4x64xf32>, %a: tensor<2x8xf32>) -> (tensor<4x64xf32>, tensor<2x40xf32>) attributes {ember.input_names = ["x", "a"], ember.output_names = ["y", "z"]} {
    %y = graph.relu %x : tensor<4x64xf32> -> tensor<4x64xf32>
    %b = graph.constant "b" : tensor<8x40xf32>
    %z = graph.matmul %a, %b : tensor<2x8xf32>, tensor<8x40xf32> -> tensor<2x40xf32>
    func.return %y, %z : tensor<4x64xf32>, tensor<2x40xf32>
  }
}
