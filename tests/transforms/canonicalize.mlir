// RUN: ember-opt %s --random-weights --weight two=2 --weight h_three=3 --weight h_four=4 \
// RUN:   --weight tenth=0.1 --weight half=0.5 --pipeline canonicalize,dce | filecheck %s
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

  // Constant arithmetic reassociated and folded: (x - c) / d * c -> x * (c/d) + (-c/d*c), one
  // mul and one add; x ** 2 -> x * x.
  // CHECK-LABEL: func.func @constant_arithmetic(%x: tensor<2x4xf32>)
  // CHECK:         %[[M:.*]] = graph.mul %x, %{{.*}} : tensor<2x4xf32>, tensor<4xf32>
  // CHECK:         %[[A:.*]] = graph.add %[[M]], %{{.*}} : tensor<2x4xf32>, tensor<4xf32>
  // CHECK:         graph.mul %[[A]], %[[A]]
  // CHECK-NOT:     graph.sub
  // CHECK-NOT:     graph.div
  // CHECK-NOT:     graph.pow
  func.func @constant_arithmetic(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
    %c = graph.constant "k1" : tensor<4xf32>
    %d = graph.constant "k2" : tensor<4xf32>
    %two = graph.constant "two" : tensor<1xf32>
    %a = graph.sub %x, %c : tensor<2x4xf32>, tensor<4xf32> -> tensor<2x4xf32>
    %b = graph.div %a, %d : tensor<2x4xf32>, tensor<4xf32> -> tensor<2x4xf32>
    %e = graph.mul %c, %b : tensor<4xf32>, tensor<2x4xf32> -> tensor<2x4xf32>
    %f = graph.pow %e, %two : tensor<2x4xf32>, tensor<1xf32> -> tensor<2x4xf32>
    func.return %f : tensor<2x4xf32>
  }

  // Left alone in float16: a reciprocal or a reassociated constant rounds once more (~5e-4
  // relative in f16, the size of the tolerance a user compares with). Only the exact
  // reciprocal (of 4) applies; x / 3 and the two muls by c stay as written.
  // CHECK-LABEL: func.func @float16_as_written(%x: tensor<2x4xf16>)
  // CHECK:         %[[A:.*]] = graph.div %x, %{{.*}} : tensor<2x4xf16>, tensor<1xf16>
  // CHECK:         %[[B:.*]] = graph.mul %[[A]], %{{.*}} : tensor<2x4xf16>, tensor<1xf16>
  // CHECK:         %[[M:.*]] = graph.mul %[[B]], %c
  // CHECK:         graph.mul %[[M]], %c
  func.func @float16_as_written(%x: tensor<2x4xf16>) -> tensor<2x4xf16> {
    %three = graph.constant "h_three" : tensor<1xf16>
    %four = graph.constant "h_four" : tensor<1xf16>
    %c = graph.constant "hc" : tensor<4xf16>
    %a = graph.div %x, %three : tensor<2x4xf16>, tensor<1xf16> -> tensor<2x4xf16>
    %b = graph.div %a, %four : tensor<2x4xf16>, tensor<1xf16> -> tensor<2x4xf16>
    %m = graph.mul %b, %c : tensor<2x4xf16>, tensor<4xf16> -> tensor<2x4xf16>
    %n = graph.mul %m, %c : tensor<2x4xf16>, tensor<4xf16> -> tensor<2x4xf16>
    func.return %n : tensor<2x4xf16>
  }

  // Left alone: a division whose result reaches a Floor (here through a Relu) stays a
  // division: x * 10.000000149 (the reciprocal of 0.1) would move a value on a bucket
  // boundary into the next bucket. An exact reciprocal (of 0.5) still applies, and a division
  // that reaches no step op becomes a multiplication.
  // CHECK-LABEL: func.func @division_before_floor(%x: tensor<2x4xf32>)
  // CHECK:         graph.div %x, %tenth
  // CHECK:         graph.floor
  // CHECK:         %[[B:.*]] = graph.mul %x, %{{.*}} : tensor<2x4xf32>, tensor<1xf32>
  // CHECK:         graph.floor %[[B]]
  // CHECK:         graph.mul %x, %{{.*}} : tensor<2x4xf32>, tensor<1xf32>
  // CHECK-NOT:     graph.div
  func.func @division_before_floor(%x: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) {
    %tenth = graph.constant "tenth" : tensor<1xf32>
    %half = graph.constant "half" : tensor<1xf32>
    %a = graph.div %x, %tenth : tensor<2x4xf32>, tensor<1xf32> -> tensor<2x4xf32>
    %r = graph.relu %a : tensor<2x4xf32> -> tensor<2x4xf32>
    %f = graph.floor %r : tensor<2x4xf32> -> tensor<2x4xf32>
    %b = graph.div %x, %half : tensor<2x4xf32>, tensor<1xf32> -> tensor<2x4xf32>
    %g = graph.floor %b : tensor<2x4xf32> -> tensor<2x4xf32>
    %c = graph.div %x, %tenth : tensor<2x4xf32>, tensor<1xf32> -> tensor<2x4xf32>
    func.return %f, %g, %c : tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>
  }
}
