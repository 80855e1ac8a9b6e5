// RUN: ember-opt %s --random-weights --pipeline canonicalize,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

builtin.module {
  // CHECK-LABEL: func.func @identity_and_reshapes(%x: tensor<2x3x4xf32>)
  // CHECK-NEXT:    %[[R:.*]] = graph.reshape %x : tensor<2x3x4xf32> -> tensor<24xf32>
  // CHECK-NEXT:    func.return %[[R]], %x
  // CHECK-NOT:   graph.
  func.func @identity_and_reshapes(%x: tensor<2x3x4xf32>) -> (tensor<24xf32>, tensor<2x3x4xf32>) {
    %a = graph.identity %x : tensor<2x3x4xf32> -> tensor<2x3x4xf32>
    %b = graph.reshape %a : tensor<2x3x4xf32> -> tensor<6x4xf32>
    %c = graph.reshape %b : tensor<6x4xf32> -> tensor<24xf32>
    %d = graph.reshape %c : tensor<24xf32> -> tensor<24xf32>
    %e = graph.transpose %x {perm = array<i64: 1, 0, 2>} : tensor<2x3x4xf32> -> tensor<3x2x4xf32>
    %f = graph.transpose %e {perm = array<i64: 1, 0, 2>} : tensor<3x2x4xf32> -> tensor<2x3x4xf32>
    func.return %d, %f : tensor<24xf32>, tensor<2x3x4xf32>
  }

  // gemm -> matmul: transpose and alpha fold into the weight, beta into the bias.
  // CHECK-LABEL: func.func @gemm_to_matmul(%a: tensor<3x4xf32>)
  // CHECK-DAG:     %[[B:.*]] = graph.constant "b.gemm" : tensor<4x5xf32>
  // CHECK-DAG:     %[[C:.*]] = graph.constant "c.bias" : tensor<5xf32>
  // CHECK:         graph.matmul %a, %[[B]] bias %[[C]] : tensor<3x4xf32>, tensor<4x5xf32>, tensor<5xf32> -> tensor<3x5xf32>
  // CHECK-NOT:     graph.gemm
  // CHECK-NOT:     graph.constant "b"
  func.func @gemm_to_matmul(%a: tensor<3x4xf32>) -> tensor<3x5xf32> {
    %b = graph.constant "b" : tensor<5x4xf32>
    %c = graph.constant "c" : tensor<1x5xf32>
    %y = graph.gemm %a, %b, %c {alpha = 0.5 : f32, beta = 2.0 : f32, trans_a = 0 : i64, trans_b = 1 : i64} : tensor<3x4xf32>, tensor<5x4xf32>, tensor<1x5xf32> -> tensor<3x5xf32>
    func.return %y : tensor<3x5xf32>
  }

  // A batch_norm with no conv before it becomes a per-channel multiply-add.
  // CHECK-LABEL: func.func @batch_norm_to_mul_add(%x: tensor<1x3x2x2xf32>)
  // CHECK:         %[[S:.*]] = graph.constant "s.scale" : tensor<3x1x1xf32>
  // CHECK:         %[[T:.*]] = graph.constant "s.shift" : tensor<3x1x1xf32>
  // CHECK:         %[[M:.*]] = graph.mul %x, %[[S]]
  // CHECK:         graph.add %[[M]], %[[T]]
  // CHECK-NOT:     graph.batch_norm
  func.func @batch_norm_to_mul_add(%x: tensor<1x3x2x2xf32>) -> tensor<1x3x2x2xf32> {
    %s = graph.constant "s" : tensor<3xf32>
    %b = graph.constant "bn_b" : tensor<3xf32>
    %m = graph.constant "m" : tensor<3xf32>
    %v = graph.constant "v" : tensor<3xf32>
    %y = graph.batch_norm %x, %s, %b, %m, %v {epsilon = 1.0e-5 : f32} : tensor<1x3x2x2xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32> -> tensor<1x3x2x2xf32>
    func.return %y : tensor<1x3x2x2xf32>
  }
}
