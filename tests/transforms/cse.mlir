// RUN: ember-opt %s --random-weights --weight w1=0.5 --weight w2=0.5 --weight w3=0.25 \
// RUN:   --weight zp=0.0 --weight zn=-0.0 --pipeline cse,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

builtin.module {
  // Sibling convs on one input whose weights are equal fills under two names become one conv;
  // a third weight of other values keeps its own; the ops reading the merged conv merge too.
  // CHECK-LABEL: func.func @sibling_convs(
  // CHECK-NEXT:    %w1 = graph.constant "w1"
  // CHECK-NEXT:    %w3 = graph.constant "w3"
  // CHECK-NEXT:    %c1 = graph.conv %x, %w1
  // CHECK-NEXT:    %c3 = graph.conv %x, %w3
  // CHECK-NEXT:    %r1 = graph.relu %c1
  // CHECK-NEXT:    %r3 = graph.relu %c3
  // CHECK-NEXT:    %y = graph.concat %r1, %r1, %r3
  // CHECK-NEXT:    func.return %y
  func.func @sibling_convs(%x: tensor<1x2x4x4xf32>) -> tensor<1x9x4x4xf32> {
    %w1 = graph.constant "w1" : tensor<3x2x1x1xf32>
    %w2 = graph.constant "w2" : tensor<3x2x1x1xf32>
    %w3 = graph.constant "w3" : tensor<3x2x1x1xf32>
    %c1 = graph.conv %x, %w1 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32> -> tensor<1x3x4x4xf32>
    %c2 = graph.conv %x, %w2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32> -> tensor<1x3x4x4xf32>
    %c3 = graph.conv %x, %w3 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32> -> tensor<1x3x4x4xf32>
    %r1 = graph.relu %c1 : tensor<1x3x4x4xf32> -> tensor<1x3x4x4xf32>
    %r2 = graph.relu %c2 : tensor<1x3x4x4xf32> -> tensor<1x3x4x4xf32>
    %r3 = graph.relu %c3 : tensor<1x3x4x4xf32> -> tensor<1x3x4x4xf32>
    %y = graph.concat %r1, %r2, %r3 {axis = 1 : i64} : tensor<1x3x4x4xf32>, tensor<1x3x4x4xf32>, tensor<1x3x4x4xf32> -> tensor<1x9x4x4xf32>
    func.return %y : tensor<1x9x4x4xf32>
  }

  // Ops that differ in a property (the pool's stride) or in an operand stay apart; -0.0 and
  // 0.0 compare equal as floats but not as bits: both constants stay.
  // CHECK-LABEL: func.func @different(
  // CHECK-NEXT:    %zp = graph.constant "zp"
  // CHECK-NEXT:    %zn = graph.constant "zn"
  // CHECK-NEXT:    %p1 = graph.max_pool %x
  // CHECK-NEXT:    %p2 = graph.max_pool %x
  // CHECK-NEXT:    %d1 = graph.div %p1, %zp
  // CHECK-NEXT:    %d2 = graph.div %p1, %zn
  // CHECK-NEXT:    %e = graph.add %d1, %p2
  // CHECK-NEXT:    func.return %d2, %e
  func.func @different(%x: tensor<1x2x4x4xf32>) -> (tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32>) {
    %zp = graph.constant "zp" : tensor<1x2x2x2xf32>
    %zn = graph.constant "zn" : tensor<1x2x2x2xf32>
    %p1 = graph.max_pool %x {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>} : tensor<1x2x4x4xf32> -> tensor<1x2x2x2xf32>
    %p2 = graph.max_pool %x {kernel_shape = array<i64: 3, 3>, strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>} : tensor<1x2x4x4xf32> -> tensor<1x2x2x2xf32>
    %d1 = graph.div %p1, %zp : tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32> -> tensor<1x2x2x2xf32>
    %d2 = graph.div %p1, %zn : tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32> -> tensor<1x2x2x2xf32>
    %e = graph.add %d1, %p2 : tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32> -> tensor<1x2x2x2xf32>
    func.return %d2, %e : tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32>
  }
}
