// RUN: ember-opt %s --random-weights --pipeline fold-batchnorm,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

builtin.module {
  // batch_norm and a per-channel constant scale fold into the conv's weight and bias.
  // CHECK-LABEL: func.func @conv_bn_scale(%x: tensor<1x3x5x5xf32>)
  // CHECK:         %[[W:.*]] = graph.constant "w.bn.bn" : tensor<4x3x3x3xf32>
  // CHECK:         %[[B:.*]] = graph.constant "w.bn.bn_bias" : tensor<4xf32>
  // CHECK:         graph.conv %x, %[[W]] bias %[[B]]
  // CHECK-NOT:     graph.batch_norm
  // CHECK-NOT:     graph.mul
  func.func @conv_bn_scale(%x: tensor<1x3x5x5xf32>) -> tensor<1x4x5x5xf32> {
    %w = graph.constant "w" : tensor<4x3x3x3xf32>
    %b = graph.constant "b" : tensor<4xf32>
    %s = graph.constant "s" : tensor<4xf32>
    %t = graph.constant "t" : tensor<4xf32>
    %m = graph.constant "m" : tensor<4xf32>
    %v = graph.constant "v" : tensor<4xf32>
    %k = graph.constant "k" : tensor<1x4x1x1xf32>
    %c = graph.conv %x, %w bias %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
    %n = graph.batch_norm %c, %s, %t, %m, %v {epsilon = 1.0e-3 : f32} : tensor<1x4x5x5xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
    %y = graph.mul %n, %k : tensor<1x4x5x5xf32>, tensor<1x4x1x1xf32> -> tensor<1x4x5x5xf32>
    func.return %y : tensor<1x4x5x5xf32>
  }

  // The conv's result is also returned: folding would change it, so nothing folds.
  // CHECK-LABEL: func.func @multi_use_conv(%x: tensor<1x3x5x5xf32>)
  // CHECK:         graph.conv
  // CHECK:         graph.batch_norm
  // CHECK:         graph.mul
  func.func @multi_use_conv(%x: tensor<1x3x5x5xf32>) -> (tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>) {
    %w = graph.constant "w2" : tensor<4x3x3x3xf32>
    %b = graph.constant "b2" : tensor<4xf32>
    %s = graph.constant "s2" : tensor<4xf32>
    %t = graph.constant "t2" : tensor<4xf32>
    %m = graph.constant "m2" : tensor<4xf32>
    %v = graph.constant "v2" : tensor<4xf32>
    %k = graph.constant "k2" : tensor<1x4x1x1xf32>
    %c = graph.conv %x, %w bias %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
    %n = graph.batch_norm %c, %s, %t, %m, %v {epsilon = 1.0e-3 : f32} : tensor<1x4x5x5xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
    %y = graph.mul %n, %k : tensor<1x4x5x5xf32>, tensor<1x4x1x1xf32> -> tensor<1x4x5x5xf32>
    func.return %y, %c : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>
  }
}
