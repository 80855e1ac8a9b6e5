// RUN: ember-opt %s --random-weights --weight two=2 --weight eps=1e-5 --weight three=3 \
// RUN:   --pipeline fuse-layer-norm,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// mean, x - mean, its square's mean + eps, sqrt, divide, scale, shift: one graph.layer_norm
// over the trailing axis, with eps read from the constant (a random one here) and the scale
// and shift as new constants of the normalized axis' length.
// CHECK-LABEL: func.func @decomposed(
// CHECK:         %[[G:.*]] = graph.constant "g.ln_scale" : tensor<8xf32>
// CHECK:         %[[B:.*]] = graph.constant "b.ln_bias" : tensor<8xf32>
// CHECK:         %z = graph.layer_norm %x, %[[G]], %[[B]] {axis = 2 : i64, epsilon = 1.000000e-05 : f32} : tensor<2x5x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
// CHECK-NEXT:    func.return %z
func.func @decomposed(%x: tensor<2x5x8xf32>) -> tensor<2x5x8xf32> {
  %eps = graph.constant "eps" : tensor<f32>
  %g = graph.constant "g" : tensor<8xf32>
  %b = graph.constant "b" : tensor<8xf32>
  %m = graph.reduce %x {reduction = "mean", axes = array<i64: 2>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x5x1xf32>
  %d = graph.sub %x, %m : tensor<2x5x8xf32>, tensor<2x5x1xf32> -> tensor<2x5x8xf32>
  %sq = graph.mul %d, %d : tensor<2x5x8xf32>, tensor<2x5x8xf32> -> tensor<2x5x8xf32>
  %v = graph.reduce %sq {reduction = "mean", axes = array<i64: 2>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x5x1xf32>
  %ve = graph.add %v, %eps : tensor<2x5x1xf32>, tensor<f32> -> tensor<2x5x1xf32>
  %s = graph.sqrt %ve : tensor<2x5x1xf32> -> tensor<2x5x1xf32>
  %n = graph.div %d, %s : tensor<2x5x8xf32>, tensor<2x5x1xf32> -> tensor<2x5x8xf32>
  %y = graph.mul %n, %g : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  %z = graph.add %y, %b : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  func.return %z : tensor<2x5x8xf32>
}

// The same with the square written as (x - mean) ** 2 (a constant exponent of exactly 2).
// CHECK-LABEL: func.func @squared_by_pow(
// CHECK:         %[[G:.*]] = graph.constant "g0.ln_scale" : tensor<8xf32>
// CHECK:         %[[B:.*]] = graph.constant "b0.ln_bias" : tensor<8xf32>
// CHECK:         %z = graph.layer_norm %x, %[[G]], %[[B]] {axis = 2 : i64, epsilon = 1.000000e-05 : f32}
// CHECK-NEXT:    func.return %z
func.func @squared_by_pow(%x: tensor<2x5x8xf32>) -> tensor<2x5x8xf32> {
  %two = graph.constant "two" : tensor<f32>
  %eps = graph.constant "eps" : tensor<f32>
  %g = graph.constant "g0" : tensor<8xf32>
  %b = graph.constant "b0" : tensor<8xf32>
  %m = graph.reduce %x {reduction = "mean", axes = array<i64: 2>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x5x1xf32>
  %d = graph.sub %x, %m : tensor<2x5x8xf32>, tensor<2x5x1xf32> -> tensor<2x5x8xf32>
  %sq = graph.pow %d, %two : tensor<2x5x8xf32>, tensor<f32> -> tensor<2x5x8xf32>
  %v = graph.reduce %sq {reduction = "mean", axes = array<i64: 2>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x5x1xf32>
  %ve = graph.add %v, %eps : tensor<2x5x1xf32>, tensor<f32> -> tensor<2x5x1xf32>
  %s = graph.sqrt %ve : tensor<2x5x1xf32> -> tensor<2x5x1xf32>
  %n = graph.div %d, %s : tensor<2x5x8xf32>, tensor<2x5x1xf32> -> tensor<2x5x8xf32>
  %y = graph.mul %n, %g : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  %z = graph.add %y, %b : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  func.return %z : tensor<2x5x8xf32>
}

// Left alone: an exponent other than 2 (here 3) is no square.
// CHECK-LABEL: func.func @pow_of_another_exponent(
// CHECK-NOT:     graph.layer_norm
// CHECK:         graph.pow %d, %p
func.func @pow_of_another_exponent(%x: tensor<2x5x8xf32>) -> tensor<2x5x8xf32> {
  %p = graph.constant "three" : tensor<f32>
  %eps = graph.constant "eps" : tensor<f32>
  %g = graph.constant "g3" : tensor<8xf32>
  %b = graph.constant "b3" : tensor<8xf32>
  %m = graph.reduce %x {reduction = "mean", axes = array<i64: 2>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x5x1xf32>
  %d = graph.sub %x, %m : tensor<2x5x8xf32>, tensor<2x5x1xf32> -> tensor<2x5x8xf32>
  %sq = graph.pow %d, %p : tensor<2x5x8xf32>, tensor<f32> -> tensor<2x5x8xf32>
  %v = graph.reduce %sq {reduction = "mean", axes = array<i64: 2>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x5x1xf32>
  %ve = graph.add %v, %eps : tensor<2x5x1xf32>, tensor<f32> -> tensor<2x5x1xf32>
  %s = graph.sqrt %ve : tensor<2x5x1xf32> -> tensor<2x5x1xf32>
  %n = graph.div %d, %s : tensor<2x5x8xf32>, tensor<2x5x1xf32> -> tensor<2x5x8xf32>
  %y = graph.mul %n, %g : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  %z = graph.add %y, %b : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  func.return %z : tensor<2x5x8xf32>
}

// Left alone: the statistics are over axis 1 while the scale runs along axis 2.
// CHECK-LABEL: func.func @reduced_over_another_axis(
// CHECK-NOT:     graph.layer_norm
// CHECK:         graph.reduce %x {reduction = "mean", axes = array<i64: 1>
// CHECK:         graph.sqrt
func.func @reduced_over_another_axis(%x: tensor<2x5x8xf32>) -> tensor<2x5x8xf32> {
  %eps = graph.constant "eps1" : tensor<f32>
  %g = graph.constant "g1" : tensor<8xf32>
  %b = graph.constant "b1" : tensor<8xf32>
  %m = graph.reduce %x {reduction = "mean", axes = array<i64: 1>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x1x8xf32>
  %d = graph.sub %x, %m : tensor<2x5x8xf32>, tensor<2x1x8xf32> -> tensor<2x5x8xf32>
  %sq = graph.mul %d, %d : tensor<2x5x8xf32>, tensor<2x5x8xf32> -> tensor<2x5x8xf32>
  %v = graph.reduce %sq {reduction = "mean", axes = array<i64: 1>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x1x8xf32>
  %ve = graph.add %v, %eps : tensor<2x1x8xf32>, tensor<f32> -> tensor<2x1x8xf32>
  %s = graph.sqrt %ve : tensor<2x1x8xf32> -> tensor<2x1x8xf32>
  %n = graph.div %d, %s : tensor<2x5x8xf32>, tensor<2x1x8xf32> -> tensor<2x5x8xf32>
  %y = graph.mul %n, %g : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  %z = graph.add %y, %b : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  func.return %z : tensor<2x5x8xf32>
}

// Left alone: the centered values x - mean are also a result.
// CHECK-LABEL: func.func @centered_values_escape(
// CHECK-NOT:     graph.layer_norm
// CHECK:         %d = graph.sub %x, %m
// CHECK:         func.return %z, %d
func.func @centered_values_escape(%x: tensor<2x5x8xf32>) -> (tensor<2x5x8xf32>, tensor<2x5x8xf32>) {
  %eps = graph.constant "eps2" : tensor<f32>
  %g = graph.constant "g2" : tensor<8xf32>
  %b = graph.constant "b2" : tensor<8xf32>
  %m = graph.reduce %x {reduction = "mean", axes = array<i64: 2>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x5x1xf32>
  %d = graph.sub %x, %m : tensor<2x5x8xf32>, tensor<2x5x1xf32> -> tensor<2x5x8xf32>
  %sq = graph.mul %d, %d : tensor<2x5x8xf32>, tensor<2x5x8xf32> -> tensor<2x5x8xf32>
  %v = graph.reduce %sq {reduction = "mean", axes = array<i64: 2>, keepdims = 1 : i64} : tensor<2x5x8xf32> -> tensor<2x5x1xf32>
  %ve = graph.add %v, %eps : tensor<2x5x1xf32>, tensor<f32> -> tensor<2x5x1xf32>
  %s = graph.sqrt %ve : tensor<2x5x1xf32> -> tensor<2x5x1xf32>
  %n = graph.div %d, %s : tensor<2x5x8xf32>, tensor<2x5x1xf32> -> tensor<2x5x8xf32>
  %y = graph.mul %n, %g : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  %z = graph.add %y, %b : tensor<2x5x8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>
  func.return %z, %d : tensor<2x5x8xf32>, tensor<2x5x8xf32>
}
