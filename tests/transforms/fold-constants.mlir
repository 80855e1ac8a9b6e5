// RUN: ember-opt %s --random-weights --pipeline fold-constants,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// Constant subgraphs become one constant each; what depends on %x stays.
// CHECK-LABEL: func.func @main(%x: tensor<3x2xf32>)
// CHECK-DAG:     %[[S:.*]] = graph.constant "add.folded" : tensor<3x2xf32>
// CHECK-DAG:     %[[Q:.*]] = graph.constant "sqrt.folded" : tensor<3x2xf32>
// CHECK:         %[[Y:.*]] = graph.mul %x, %[[S]]
// CHECK:         graph.add %[[Y]], %[[Q]]
// CHECK-NOT:     graph.transpose
// CHECK-NOT:     graph.constant "w"

// Not folded: a cast the frontend marks integer-only (MatMulInteger's sums, which float32 may
// not hold exactly); folding it with numpy would compute that inexact float product.
// CHECK-LABEL: func.func @integer_only_cast()
// CHECK:         %y = graph.cast %c {ember.integer_only = ["MatMulInteger"
builtin.module {
  func.func @main(%x: tensor<3x2xf32>) -> tensor<3x2xf32> {
    %w = graph.constant "w" : tensor<2x3xf32>
    %k = graph.constant "k" : tensor<3x2xf32>
    %t = graph.transpose %w {perm = array<i64: 1, 0>} : tensor<2x3xf32> -> tensor<3x2xf32>
    %s = graph.add %t, %k : tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2xf32>
    %q = graph.sqrt %k : tensor<3x2xf32> -> tensor<3x2xf32>
    %y = graph.mul %x, %s : tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2xf32>
    %z = graph.add %y, %q : tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2xf32>
    func.return %z : tensor<3x2xf32>
  }
  func.func @integer_only_cast() -> tensor<2xi32> {
    %c = graph.constant "c" : tensor<2xf32>
    %y = graph.cast %c {"ember.integer_only" = ["MatMulInteger", "mmi", "17", "sums"]} : tensor<2xf32> -> tensor<2xi32>
    func.return %y : tensor<2xi32>
  }
}
