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
}
