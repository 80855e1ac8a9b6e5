// RUN: ember-opt %s --random-weights --pipeline hoist-channel-ops,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

builtin.module {
  // A 2x2/2 ConvTranspose's phase conv (3 channels x 4 phases), its interleave, then the
  // BatchNorm (mul, add) and ReLU after it: all three move before the interleave, the
  // constants repeated for the four phases of each channel.
  // CHECK-LABEL: func.func @phase_interleave(%x: tensor<1x2x4x5xf32>)
  // CHECK:         %[[C:.*]] = graph.conv
  // CHECK:         %[[M:.*]] = graph.mul %[[C]], {{.*}} : tensor<1x12x4x5xf32>, tensor<12x1x1xf32>
  // CHECK:         %[[A:.*]] = graph.add {{.*}}%[[M]]{{.*}} tensor<12x1x1xf32>
  // CHECK:         %[[R:.*]] = graph.relu %[[A]] : tensor<1x12x4x5xf32>
  // CHECK:         graph.reshape %[[R]]
  // CHECK:         graph.transpose
  // CHECK:         %[[Y:.*]] = graph.reshape
  // CHECK-NEXT:    func.return %[[Y]]
  func.func @phase_interleave(%x: tensor<1x2x4x5xf32>) -> tensor<1x3x8x10xf32> {
    %w = graph.constant "w" : tensor<12x2x1x1xf32>
    %s = graph.constant "s" : tensor<3x1x1xf32>
    %t = graph.constant "t" : tensor<3x1x1xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x2x4x5xf32>, tensor<12x2x1x1xf32> -> tensor<1x12x4x5xf32>
    %r = graph.reshape %c : tensor<1x12x4x5xf32> -> tensor<1x1x2x2x3x4x5xf32>
    %p = graph.transpose %r {perm = array<i64: 0, 1, 4, 5, 2, 6, 3>} : tensor<1x1x2x2x3x4x5xf32> -> tensor<1x1x3x4x2x5x2xf32>
    %i = graph.reshape %p : tensor<1x1x3x4x2x5x2xf32> -> tensor<1x3x8x10xf32>
    %m = graph.mul %i, %s : tensor<1x3x8x10xf32>, tensor<3x1x1xf32> -> tensor<1x3x8x10xf32>
    %a = graph.add %t, %m : tensor<3x1x1xf32>, tensor<1x3x8x10xf32> -> tensor<1x3x8x10xf32>
    %y = graph.relu %a : tensor<1x3x8x10xf32> -> tensor<1x3x8x10xf32>
    func.return %y : tensor<1x3x8x10xf32>
  }

  // A reshape that splits each conv channel over two output channels: a per-channel scale
  // has no per-conv-channel form and stays; the ReLU (no constant) still moves.
  // CHECK-LABEL: func.func @channel_spread(%x: tensor<1x2x4x5xf32>)
  // CHECK:         %[[C:.*]] = graph.conv
  // CHECK:         %[[R:.*]] = graph.relu %[[C]] : tensor<1x4x4x5xf32>
  // CHECK:         %[[S:.*]] = graph.reshape %[[R]] : tensor<1x4x4x5xf32> -> tensor<1x8x2x5xf32>
  // CHECK:         graph.mul %[[S]]
  func.func @channel_spread(%x: tensor<1x2x4x5xf32>) -> tensor<1x8x2x5xf32> {
    %w = graph.constant "w2" : tensor<4x2x1x1xf32>
    %s = graph.constant "s2" : tensor<8x1x1xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x2x4x5xf32>, tensor<4x2x1x1xf32> -> tensor<1x4x4x5xf32>
    %r = graph.reshape %c : tensor<1x4x4x5xf32> -> tensor<1x8x2x5xf32>
    %y = graph.relu %r : tensor<1x8x2x5xf32> -> tensor<1x8x2x5xf32>
    %m = graph.mul %y, %s : tensor<1x8x2x5xf32>, tensor<8x1x1xf32> -> tensor<1x8x2x5xf32>
    func.return %m : tensor<1x8x2x5xf32>
  }

  // A 1-D conv runs as 2-D of height 1 and is reshaped back: its per-channel scale (a
  // [8, 1] constant over [1, 8, 50]) and ReLU move before the reshape, into conv range.
  // CHECK-LABEL: func.func @conv_1d(%x: tensor<1x4x1x50xf32>)
  // CHECK:         %[[C:.*]] = graph.conv
  // CHECK:         %[[M:.*]] = graph.mul %[[C]], {{.*}} : tensor<1x8x1x50xf32>, tensor<8x1x1xf32>
  // CHECK:         %[[R:.*]] = graph.relu %[[M]]
  // CHECK:         graph.reshape %[[R]] : tensor<1x8x1x50xf32> -> tensor<1x8x50xf32>
  func.func @conv_1d(%x: tensor<1x4x1x50xf32>) -> tensor<1x8x50xf32> {
    %w = graph.constant "w3" : tensor<8x4x1x3xf32>
    %s = graph.constant "s3" : tensor<8x1xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 1, 0, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x4x1x50xf32>, tensor<8x4x1x3xf32> -> tensor<1x8x1x50xf32>
    %r = graph.reshape %c : tensor<1x8x1x50xf32> -> tensor<1x8x50xf32>
    %m = graph.mul %r, %s : tensor<1x8x50xf32>, tensor<8x1xf32> -> tensor<1x8x50xf32>
    %y = graph.relu %m : tensor<1x8x50xf32> -> tensor<1x8x50xf32>
    func.return %y : tensor<1x8x50xf32>
  }

  // A conv output flattened to one axis has no channel axis: a scale after it stays.
  // CHECK-LABEL: func.func @flattened(%x: tensor<1x2x4x5xf32>)
  // CHECK:         graph.reshape
  // CHECK-NEXT:    graph.mul
  func.func @flattened(%x: tensor<1x2x4x5xf32>) -> tensor<80xf32> {
    %w = graph.constant "w4" : tensor<4x2x1x1xf32>
    %s = graph.constant "s4" : tensor<1xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x2x4x5xf32>, tensor<4x2x1x1xf32> -> tensor<1x4x4x5xf32>
    %r = graph.reshape %c : tensor<1x4x4x5xf32> -> tensor<80xf32>
    %m = graph.mul %r, %s : tensor<80xf32>, tensor<1xf32> -> tensor<80xf32>
    func.return %m : tensor<80xf32>
  }

  // Not a conv's output (a function argument): nothing moves.
  // CHECK-LABEL: func.func @not_from_a_conv(%x: tensor<1x4x4x5xf32>)
  // CHECK:         graph.reshape %x
  // CHECK-NEXT:    graph.relu
  func.func @not_from_a_conv(%x: tensor<1x4x4x5xf32>) -> tensor<1x4x20xf32> {
    %r = graph.reshape %x : tensor<1x4x4x5xf32> -> tensor<1x4x20xf32>
    %y = graph.relu %r : tensor<1x4x20xf32> -> tensor<1x4x20xf32>
    func.return %y : tensor<1x4x20xf32>
  }
}
