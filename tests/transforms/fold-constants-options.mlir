// RUN: ember-opt %s --random-weights --pipeline 'fold-constants{fold-limit-bytes=16},dce' | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// fold-limit-bytes sets the largest result folded, here 16 bytes for this run of the pass
// (unset: core/limits.py's FOLD_LIMIT_BYTES, 64 MiB): the 2x2 sum (16 bytes) folds, the 3x2
// transpose (24 bytes) stays a kernel, and so does the add that reads it.
// CHECK-LABEL: func.func @main(%x: tensor<3x2xf32>, %y: tensor<2x2xf32>)
// CHECK-DAG:     %[[S:.*]] = graph.constant "add.folded" : tensor<2x2xf32>
// CHECK-DAG:     graph.transpose %w
// CHECK:         graph.mul %y, %[[S]]
// CHECK-NOT:     graph.constant "k"
builtin.module {
  func.func @main(%x: tensor<3x2xf32>, %y: tensor<2x2xf32>) -> (tensor<3x2xf32>, tensor<2x2xf32>) {
    %w = graph.constant "w" : tensor<2x3xf32>
    %k = graph.constant "k" : tensor<2x2xf32>
    %t = graph.transpose %w {perm = array<i64: 1, 0>} : tensor<2x3xf32> -> tensor<3x2xf32>
    %u = graph.add %x, %t : tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2xf32>
    %s = graph.add %k, %k : tensor<2x2xf32>, tensor<2x2xf32> -> tensor<2x2xf32>
    %z = graph.mul %y, %s : tensor<2x2xf32>, tensor<2x2xf32> -> tensor<2x2xf32>
    func.return %u, %z : tensor<3x2xf32>, tensor<2x2xf32>
  }
}
