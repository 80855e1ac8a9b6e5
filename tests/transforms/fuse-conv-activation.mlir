// RUN: ember-opt %s --random-weights --weight sqrt2=1.4142135623730951 \
// RUN:   --weight isqrt2=0.7071067811865476 --weight one=1 --weight half=0.5 \
// RUN:   --weight half_s=0.5 --weight one_s=1 --weight three=3 --weight cubic=0.044715 \
// RUN:   --weight cubic_off=0.05 --weight root_2_over_pi=0.7978845608028654 \
// RUN:   --pipeline fuse-conv-activation,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// One activation fuses into the conv/matmul before it (with its parameters); a second one
// after it stays a separate op.
// CHECK-LABEL: func.func @main(
// CHECK:         %y = graph.conv %x, %w {{.*}}activation = "clip", activation_params = array<f32: 0.000000e+00, 6.000000e+00>
// CHECK:         %e = graph.conv %x, %w {{.*}}activation = "leaky_relu", activation_params = array<f32: 1.000000e-01>
// CHECK:         %f = graph.sigmoid %e
// CHECK:         %z = graph.matmul %a, %bm {activation = "relu"}
// GELU, x * 0.5 * (1 + erf(x / sqrt 2)), after a matmul becomes its activation: divided by
// sqrt 2 or multiplied by 1 / sqrt 2, the 0.5 applied last or first.
// CHECK-LABEL: func.func @gelu_erf_div(
// CHECK:         %y = graph.matmul %a, %bm {activation = "gelu"}
// CHECK-NEXT:    func.return %y
// CHECK-LABEL: func.func @gelu_erf_mul(
// CHECK:         %y = graph.matmul %a, %bm {activation = "gelu"}
// CHECK-NEXT:    func.return %y
// CHECK-LABEL: func.func @gelu_erf_half_first(
// CHECK:         %y = graph.matmul %a, %bm {activation = "gelu"}
// CHECK-NEXT:    func.return %y

// GELU's tanh approximation, x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))), with
// the cube as x ** 3 or as x * x * x.
// CHECK-LABEL: func.func @gelu_tanh_pow(
// CHECK:         %g = graph.matmul %x, %w {activation = "gelu_tanh"}
// CHECK-NEXT:    func.return %g
// CHECK-LABEL: func.func @gelu_tanh_muls(
// CHECK:         %g = graph.matmul %x, %w {activation = "gelu_tanh"}
// CHECK-NEXT:    func.return %g

// Left alone: another cubic coefficient (0.05) is not GELU.
// CHECK-LABEL: func.func @not_gelu_tanh(
// CHECK-NOT:     activation
// CHECK:         graph.tanh
builtin.module {
  func.func @main(%x: tensor<1x3x5x5xf32>, %a: tensor<2x6xf32>) -> (tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<2x5xf32>) {
    %w = graph.constant "w" : tensor<4x3x3x3xf32>
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32> -> tensor<1x4x5x5xf32>
    %y = graph.clip %c {min = 0.0 : f32, max = 6.0 : f32} : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %d = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32> -> tensor<1x4x5x5xf32>
    %e = graph.leaky_relu %d {alpha = 0.1 : f32} : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %f = graph.sigmoid %e : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    %z = graph.relu %m : tensor<2x5xf32> -> tensor<2x5xf32>
    func.return %y, %f, %z : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<2x5xf32>
  }
  func.func @gelu_erf_div(%a: tensor<2x6xf32>) -> tensor<2x5xf32> {
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %sqrt2 = graph.constant "sqrt2" : tensor<1xf32>
    %isqrt2 = graph.constant "isqrt2" : tensor<1xf32>
    %one = graph.constant "one" : tensor<1xf32>
    %half = graph.constant "half" : tensor<1xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    %s = graph.div %m, %sqrt2 : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    %e = graph.erf %s : tensor<2x5xf32> -> tensor<2x5xf32>
    %p = graph.add %e, %one : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    %h = graph.mul %m, %p : tensor<2x5xf32>, tensor<2x5xf32> -> tensor<2x5xf32>
    %y = graph.mul %h, %half : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    func.return %y : tensor<2x5xf32>
  }
  func.func @gelu_erf_mul(%a: tensor<2x6xf32>) -> tensor<2x5xf32> {
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %sqrt2 = graph.constant "sqrt2" : tensor<1xf32>
    %isqrt2 = graph.constant "isqrt2" : tensor<1xf32>
    %one = graph.constant "one" : tensor<1xf32>
    %half = graph.constant "half" : tensor<1xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    %s = graph.mul %m, %isqrt2 : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    %e = graph.erf %s : tensor<2x5xf32> -> tensor<2x5xf32>
    %p = graph.add %e, %one : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    %h = graph.mul %m, %p : tensor<2x5xf32>, tensor<2x5xf32> -> tensor<2x5xf32>
    %y = graph.mul %h, %half : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    func.return %y : tensor<2x5xf32>
  }
  func.func @gelu_erf_half_first(%a: tensor<2x6xf32>) -> tensor<2x5xf32> {
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %sqrt2 = graph.constant "sqrt2" : tensor<1xf32>
    %isqrt2 = graph.constant "isqrt2" : tensor<1xf32>
    %one = graph.constant "one" : tensor<1xf32>
    %half = graph.constant "half" : tensor<1xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    %s = graph.mul %m, %isqrt2 : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    %e = graph.erf %s : tensor<2x5xf32> -> tensor<2x5xf32>
    %p = graph.add %e, %one : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    %h = graph.mul %m, %half : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    %y = graph.mul %h, %p : tensor<2x5xf32>, tensor<2x5xf32> -> tensor<2x5xf32>
    func.return %y : tensor<2x5xf32>
  }
  func.func @gelu_tanh_pow(%x: tensor<3x8xf32>) -> tensor<3x6xf32> {
    %w = graph.constant "wt" : tensor<8x6xf32>
    %three = graph.constant "three" : tensor<f32>
    %c1 = graph.constant "cubic" : tensor<f32>
    %c2 = graph.constant "root_2_over_pi" : tensor<f32>
    %half = graph.constant "half_s" : tensor<f32>
    %one = graph.constant "one_s" : tensor<f32>
    %h = graph.matmul %x, %w : tensor<3x8xf32>, tensor<8x6xf32> -> tensor<3x6xf32>
    %cube = graph.pow %h, %three : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t1 = graph.mul %cube, %c1 : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t2 = graph.add %h, %t1 : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<3x6xf32>
    %t3 = graph.mul %t2, %c2 : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t4 = graph.tanh %t3 : tensor<3x6xf32> -> tensor<3x6xf32>
    %t5 = graph.add %t4, %one : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t6 = graph.mul %h, %half : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %g = graph.mul %t6, %t5 : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<3x6xf32>
    func.return %g : tensor<3x6xf32>
  }
  func.func @gelu_tanh_muls(%x: tensor<3x8xf32>) -> tensor<3x6xf32> {
    %w = graph.constant "wt" : tensor<8x6xf32>
    %three = graph.constant "three" : tensor<f32>
    %c1 = graph.constant "cubic" : tensor<f32>
    %c2 = graph.constant "root_2_over_pi" : tensor<f32>
    %half = graph.constant "half_s" : tensor<f32>
    %one = graph.constant "one_s" : tensor<f32>
    %h = graph.matmul %x, %w : tensor<3x8xf32>, tensor<8x6xf32> -> tensor<3x6xf32>
    %sq = graph.mul %h, %h : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<3x6xf32>
    %cube = graph.mul %sq, %h : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<3x6xf32>
    %t1 = graph.mul %cube, %c1 : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t2 = graph.add %h, %t1 : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<3x6xf32>
    %t3 = graph.mul %t2, %c2 : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t4 = graph.tanh %t3 : tensor<3x6xf32> -> tensor<3x6xf32>
    %t5 = graph.add %t4, %one : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t6 = graph.mul %h, %half : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %g = graph.mul %t6, %t5 : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<3x6xf32>
    func.return %g : tensor<3x6xf32>
  }
  func.func @not_gelu_tanh(%x: tensor<3x8xf32>) -> tensor<3x6xf32> {
    %w = graph.constant "wt" : tensor<8x6xf32>
    %three = graph.constant "three" : tensor<f32>
    %c1 = graph.constant "cubic_off" : tensor<f32>
    %c2 = graph.constant "root_2_over_pi" : tensor<f32>
    %half = graph.constant "half_s" : tensor<f32>
    %one = graph.constant "one_s" : tensor<f32>
    %h = graph.matmul %x, %w : tensor<3x8xf32>, tensor<8x6xf32> -> tensor<3x6xf32>
    %cube = graph.pow %h, %three : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t1 = graph.mul %cube, %c1 : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t2 = graph.add %h, %t1 : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<3x6xf32>
    %t3 = graph.mul %t2, %c2 : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t4 = graph.tanh %t3 : tensor<3x6xf32> -> tensor<3x6xf32>
    %t5 = graph.add %t4, %one : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %t6 = graph.mul %h, %half : tensor<3x6xf32>, tensor<f32> -> tensor<3x6xf32>
    %g = graph.mul %t6, %t5 : tensor<3x6xf32>, tensor<3x6xf32> -> tensor<3x6xf32>
    func.return %g : tensor<3x6xf32>
  }
}
