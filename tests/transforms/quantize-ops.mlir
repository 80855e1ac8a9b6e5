// RUN: ember-opt %s --random-weights --weight xs=0.02 --weight xz=5 --weight wz=0 \
// RUN:   --weight ys=0.05 --weight yz=128 --weight wz3=3 \
// RUN:   --weight cs=0.5 --weight cz=7 --weight cz8=8 --weight rs=0.25 --weight rz=3 \
// RUN:   --weight ys2=0.75 --weight yz2=9 --weight one=1 --weight mws=1 --weight mws2=0.5 \
// RUN:   --weight mwz=0 --pipeline quantize-ops,dce | filecheck %s
// The int32 bias recovered exactly and the multipliers' values: tests/transforms/test_quantize_ops.py;
// the integer kernels against onnxruntime: tests/kernels/test_q*.py.
// (The int8 weights are 1 and the float biases random: --random-weights.)

// DequantizeLinear -> Conv -> QuantizeLinear with constant scales and zero points, an int8
// weight with zero point 0: one graph.qconv accumulating in int32 with its requantization
// constants (offset: the bias part that is an exact int32, here none; multiplier; float bias).
// CHECK-LABEL: func.func @qdq_conv(
// CHECK-DAG:     %[[W:.*]] = graph.constant "wq" : tensor<4x3x3x3xi8>
// CHECK-DAG:     %[[OFF:.*]] = graph.constant "qconv.offset" : tensor<4xi32>
// CHECK-DAG:     %[[MUL:.*]] = graph.constant "qconv.multiplier" : tensor<4xf32>
// CHECK-DAG:     %[[B:.*]] = graph.constant "qconv.bias" : tensor<4xf32>
// CHECK:         %y = graph.qconv %xq, %[[W]], %[[OFF]], %[[MUL]], %[[B]] {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, input_zero_point = 5 : i64, output_zero_point = 128 : i64, output_min = 0 : i64, output_max = 255 : i64} : tensor<1x3x5x5xui8>, tensor<4x3x3x3xi8>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x5x5xui8>
// CHECK-NEXT:    func.return %y
func.func @qdq_conv(%xq: tensor<1x3x5x5xui8>) -> tensor<1x4x5x5xui8> {
  %xs = graph.constant "xs" : tensor<f32>
  %xz = graph.constant "xz" : tensor<ui8>
  %x = graph.dequantize_linear %xq, %xs, %xz : tensor<1x3x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x3x5x5xf32>
  %wq = graph.constant "wq" : tensor<4x3x3x3xi8>
  %ws = graph.constant "ws" : tensor<4x1x1x1xf32>
  %wz = graph.constant "wz" : tensor<4x1x1x1xi8>
  %w = graph.dequantize_linear %wq, %ws, %wz : tensor<4x3x3x3xi8>, tensor<4x1x1x1xf32>, tensor<4x1x1x1xi8> -> tensor<4x3x3x3xf32>
  %b = graph.constant "b" : tensor<4xf32>
  %conv = graph.conv %x, %w bias %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
  %ys = graph.constant "ys" : tensor<f32>
  %yz = graph.constant "yz" : tensor<ui8>
  %y = graph.quantize_linear %conv, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
  func.return %y : tensor<1x4x5x5xui8>
}

// Depthwise (group = channels) and grouped convs keep their group; the filter is unchanged
// (convert-graph-to-kernel packs it).
// CHECK-LABEL: func.func @depthwise(
// CHECK:         %y = graph.qconv %xq
// CHECK-SAME:    group = 4 : i64
// CHECK-SAME:    tensor<1x4x5x5xui8>, tensor<4x1x3x3xi8>
// CHECK-NOT:     graph.conv
func.func @depthwise(%xq: tensor<1x4x5x5xui8>) -> tensor<1x4x5x5xui8> {
  %xs = graph.constant "xs" : tensor<f32>
  %xz = graph.constant "xz" : tensor<ui8>
  %x = graph.dequantize_linear %xq, %xs, %xz : tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xf32>
  %wq = graph.constant "wq_dw" : tensor<4x1x3x3xi8>
  %ws = graph.constant "ws" : tensor<4x1x1x1xf32>
  %wz = graph.constant "wz" : tensor<4x1x1x1xi8>
  %w = graph.dequantize_linear %wq, %ws, %wz : tensor<4x1x3x3xi8>, tensor<4x1x1x1xf32>, tensor<4x1x1x1xi8> -> tensor<4x1x3x3xf32>
  %b = graph.constant "b" : tensor<4xf32>
  %conv = graph.conv %x, %w bias %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 4 : i64} : tensor<1x4x5x5xf32>, tensor<4x1x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
  %ys = graph.constant "ys" : tensor<f32>
  %yz = graph.constant "yz" : tensor<ui8>
  %y = graph.quantize_linear %conv, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
  func.return %y : tensor<1x4x5x5xui8>
}

// CHECK-LABEL: func.func @grouped(
// CHECK:         %y = graph.qconv %xq
// CHECK-SAME:    group = 2 : i64
// CHECK-SAME:    tensor<1x4x5x5xui8>, tensor<4x2x3x3xi8>
// CHECK-NOT:     graph.conv
func.func @grouped(%xq: tensor<1x4x5x5xui8>) -> tensor<1x4x5x5xui8> {
  %xs = graph.constant "xs" : tensor<f32>
  %xz = graph.constant "xz" : tensor<ui8>
  %x = graph.dequantize_linear %xq, %xs, %xz : tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xf32>
  %wq = graph.constant "wq_g2" : tensor<4x2x3x3xi8>
  %ws = graph.constant "ws" : tensor<4x1x1x1xf32>
  %wz = graph.constant "wz" : tensor<4x1x1x1xi8>
  %w = graph.dequantize_linear %wq, %ws, %wz : tensor<4x2x3x3xi8>, tensor<4x1x1x1xf32>, tensor<4x1x1x1xi8> -> tensor<4x2x3x3xf32>
  %b = graph.constant "b" : tensor<4xf32>
  %conv = graph.conv %x, %w bias %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 2 : i64} : tensor<1x4x5x5xf32>, tensor<4x2x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
  %ys = graph.constant "ys" : tensor<f32>
  %yz = graph.constant "yz" : tensor<ui8>
  %y = graph.quantize_linear %conv, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
  func.return %y : tensor<1x4x5x5xui8>
}

// A relu between the conv and the quantize raises the clamp's lower bound to the zero point.
// CHECK-LABEL: func.func @conv_relu(
// CHECK:         graph.qconv
// CHECK-SAME:    output_zero_point = 128 : i64, output_min = 128 : i64, output_max = 255 : i64
// CHECK-NOT:     graph.relu
func.func @conv_relu(%xq: tensor<1x3x5x5xui8>) -> tensor<1x4x5x5xui8> {
  %xs = graph.constant "xs" : tensor<f32>
  %xz = graph.constant "xz" : tensor<ui8>
  %x = graph.dequantize_linear %xq, %xs, %xz : tensor<1x3x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x3x5x5xf32>
  %wq = graph.constant "wq" : tensor<4x3x3x3xi8>
  %ws = graph.constant "ws" : tensor<4x1x1x1xf32>
  %wz = graph.constant "wz" : tensor<4x1x1x1xi8>
  %w = graph.dequantize_linear %wq, %ws, %wz : tensor<4x3x3x3xi8>, tensor<4x1x1x1xf32>, tensor<4x1x1x1xi8> -> tensor<4x3x3x3xf32>
  %b = graph.constant "b" : tensor<4xf32>
  %conv = graph.conv %x, %w bias %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
  %relu = graph.relu %conv : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
  %ys = graph.constant "ys" : tensor<f32>
  %yz = graph.constant "yz" : tensor<ui8>
  %y = graph.quantize_linear %relu, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
  func.return %y : tensor<1x4x5x5xui8>
}

// Left alone (cannot prove the integer conv equal): a weight zero point of 3, not 0.
// CHECK-LABEL: func.func @weight_zero_point(
// CHECK-NOT:     graph.qconv
// CHECK:         graph.conv
// CHECK:         graph.quantize_linear
func.func @weight_zero_point(%xq: tensor<1x3x5x5xui8>) -> tensor<1x4x5x5xui8> {
  %xs = graph.constant "xs" : tensor<f32>
  %xz = graph.constant "xz" : tensor<ui8>
  %x = graph.dequantize_linear %xq, %xs, %xz : tensor<1x3x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x3x5x5xf32>
  %wq = graph.constant "wq" : tensor<4x3x3x3xi8>
  %ws = graph.constant "ws" : tensor<4x1x1x1xf32>
  %wz = graph.constant "wz3" : tensor<4x1x1x1xi8>
  %w = graph.dequantize_linear %wq, %ws, %wz : tensor<4x3x3x3xi8>, tensor<4x1x1x1xf32>, tensor<4x1x1x1xi8> -> tensor<4x3x3x3xf32>
  %b = graph.constant "b" : tensor<4xf32>
  %conv = graph.conv %x, %w bias %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
  %ys = graph.constant "ys" : tensor<f32>
  %yz = graph.constant "yz" : tensor<ui8>
  %y = graph.quantize_linear %conv, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
  func.return %y : tensor<1x4x5x5xui8>
}

// Left alone: the float conv result has a second reader.
// CHECK-LABEL: func.func @conv_read_twice(
// CHECK-NOT:     graph.qconv
// CHECK:         %conv = graph.conv
// CHECK:         graph.quantize_linear %conv
// CHECK:         func.return %y, %extra
func.func @conv_read_twice(%xq: tensor<1x3x5x5xui8>) -> (tensor<1x4x5x5xui8>, tensor<1x4x5x5xf32>) {
  %xs = graph.constant "xs" : tensor<f32>
  %xz = graph.constant "xz" : tensor<ui8>
  %x = graph.dequantize_linear %xq, %xs, %xz : tensor<1x3x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x3x5x5xf32>
  %wq = graph.constant "wq" : tensor<4x3x3x3xi8>
  %ws = graph.constant "ws" : tensor<4x1x1x1xf32>
  %wz = graph.constant "wz" : tensor<4x1x1x1xi8>
  %w = graph.dequantize_linear %wq, %ws, %wz : tensor<4x3x3x3xi8>, tensor<4x1x1x1xf32>, tensor<4x1x1x1xi8> -> tensor<4x3x3x3xf32>
  %b = graph.constant "b" : tensor<4xf32>
  %conv = graph.conv %x, %w bias %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
  %extra = graph.relu %conv : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
  %ys = graph.constant "ys" : tensor<f32>
  %yz = graph.constant "yz" : tensor<ui8>
  %y = graph.quantize_linear %conv, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
  func.return %y, %extra : tensor<1x4x5x5xui8>, tensor<1x4x5x5xf32>
}

// A qconv's output dequantized with its own scale and zero point (0.5, 7), added to a
// dequantized uint8 residual, relu'd and quantized: the add joins the qconv's epilogue.
// residual_params: conv scale and zero point, residual scale and zero point, output scale and
// zero point, clamp maximum.
// CHECK-LABEL: func.func @qconv_residual(
// CHECK:         %y = graph.qconv %xq, %w, %off, %mul, %b residual %rq
// CHECK-SAME:    residual_params = array<f32: 5.000000e-01, 2.500000e-01, 3.000000e+00, 7.500000e-01, 9.000000e+00, 9.000000e+00, 2.550000e+02>
// CHECK-NEXT:    func.return %y
func.func @qconv_residual(%xq: tensor<1x4x5x5xui8>, %rq: tensor<1x4x5x5xui8>) -> tensor<1x4x5x5xui8> {
  %w = graph.constant "w" : tensor<4x4x1x1xi8>
  %off = graph.constant "off" : tensor<4xi32>
  %mul = graph.constant "mul" : tensor<4xf32>
  %b = graph.constant "b" : tensor<4xf32>
  %cq = graph.qconv %xq, %w, %off, %mul, %b {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, input_zero_point = 0 : i64, output_zero_point = 7 : i64, output_min = 0 : i64, output_max = 255 : i64} : tensor<1x4x5x5xui8>, tensor<4x4x1x1xi8>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x5x5xui8>
  %cs = graph.constant "cs" : tensor<f32>
  %cz = graph.constant "cz" : tensor<ui8>
  %c = graph.dequantize_linear %cq, %cs, %cz : tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xf32>
  %rs = graph.constant "rs" : tensor<f32>
  %rz = graph.constant "rz" : tensor<ui8>
  %r = graph.dequantize_linear %rq, %rs, %rz : tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xf32>
  %sum = graph.add %r, %c : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
  %relu = graph.relu %sum : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
  %ys = graph.constant "ys2" : tensor<f32>
  %yz = graph.constant "yz2" : tensor<ui8>
  %y = graph.quantize_linear %relu, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
  func.return %y : tensor<1x4x5x5xui8>
}

// Left alone: the qconv's output dequantized with another zero point (8) than it was
// quantized with (7).
// CHECK-LABEL: func.func @residual_zero_point_disagrees(
// CHECK-NOT:     residual
// CHECK:         graph.add
// CHECK:         graph.quantize_linear
func.func @residual_zero_point_disagrees(%xq: tensor<1x4x5x5xui8>, %rq: tensor<1x4x5x5xui8>) -> tensor<1x4x5x5xui8> {
  %w = graph.constant "w" : tensor<4x4x1x1xi8>
  %off = graph.constant "off" : tensor<4xi32>
  %mul = graph.constant "mul" : tensor<4xf32>
  %b = graph.constant "b" : tensor<4xf32>
  %cq = graph.qconv %xq, %w, %off, %mul, %b {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, input_zero_point = 0 : i64, output_zero_point = 7 : i64, output_min = 0 : i64, output_max = 255 : i64} : tensor<1x4x5x5xui8>, tensor<4x4x1x1xi8>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x5x5xui8>
  %cs = graph.constant "cs" : tensor<f32>
  %cz = graph.constant "cz8" : tensor<ui8>
  %c = graph.dequantize_linear %cq, %cs, %cz : tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xf32>
  %rs = graph.constant "rs" : tensor<f32>
  %rz = graph.constant "rz" : tensor<ui8>
  %r = graph.dequantize_linear %rq, %rs, %rz : tensor<1x4x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xf32>
  %sum = graph.add %r, %c : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
  %relu = graph.relu %sum : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
  %ys = graph.constant "ys2" : tensor<f32>
  %yz = graph.constant "yz2" : tensor<ui8>
  %y = graph.quantize_linear %relu, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
  func.return %y : tensor<1x4x5x5xui8>
}

// MatMulInteger as the frontend writes it (Cast<int32>(MatMul(x - zp, w)) with a run-time zero
// point): an int32 qconv on x viewed as a 1x5x1x6 image, minus zp * colsum(w).
// CHECK-LABEL: func.func @matmul_integer(
// CHECK:         %[[XT:.*]] = graph.transpose
// CHECK:         %[[X4:.*]] = graph.reshape %[[XT]] {{.*}} -> tensor<1x5x1x6xui8>
// CHECK:         %[[Q:.*]] = graph.qconv %[[X4]], {{.*}} input_zero_point = 0 : i64, {{.*}} -> tensor<1x4x1x6xi32>
// CHECK:         %[[ZP:.*]] = graph.cast %xz : tensor<ui8> -> tensor<i32>
// CHECK:         %[[SUMS:.*]] = graph.constant "qmatmul.colsum" : tensor<4xi32>
// CHECK:         %[[C:.*]] = graph.mul %[[ZP]], %[[SUMS]]
// CHECK:         %y = graph.sub %{{.*}}, %[[C]] : tensor<2x3x4xi32>, tensor<4xi32> -> tensor<2x3x4xi32>
// CHECK-NOT:     graph.matmul
func.func @matmul_integer(%xq: tensor<2x3x5xui8>, %xz: tensor<ui8>) -> tensor<2x3x4xi32> {
  %one = graph.constant "one" : tensor<f32>
  %x = graph.dequantize_linear %xq, %one, %xz : tensor<2x3x5xui8>, tensor<f32>, tensor<ui8> -> tensor<2x3x5xf32>
  %wq = graph.constant "mwq" : tensor<5x4xi8>
  %ws = graph.constant "mws" : tensor<f32>
  %wz = graph.constant "mwz" : tensor<1x4xi8>
  %w = graph.dequantize_linear %wq, %ws, %wz : tensor<5x4xi8>, tensor<f32>, tensor<1x4xi8> -> tensor<5x4xf32>
  %mm = graph.matmul %x, %w : tensor<2x3x5xf32>, tensor<5x4xf32> -> tensor<2x3x4xf32>
  %y = graph.cast %mm : tensor<2x3x4xf32> -> tensor<2x3x4xi32>
  func.return %y : tensor<2x3x4xi32>
}

// Left alone: a dequantized weight with scale 0.5 is a float product, not MatMulInteger.
// CHECK-LABEL: func.func @matmul_of_a_scaled_weight(
// CHECK-NOT:     graph.qconv
// CHECK:         graph.matmul
func.func @matmul_of_a_scaled_weight(%xq: tensor<2x3x5xui8>, %xz: tensor<ui8>) -> tensor<2x3x4xi32> {
  %one = graph.constant "one" : tensor<f32>
  %x = graph.dequantize_linear %xq, %one, %xz : tensor<2x3x5xui8>, tensor<f32>, tensor<ui8> -> tensor<2x3x5xf32>
  %wq = graph.constant "mwq" : tensor<5x4xi8>
  %ws = graph.constant "mws2" : tensor<f32>
  %wz = graph.constant "mwz" : tensor<1x4xi8>
  %w = graph.dequantize_linear %wq, %ws, %wz : tensor<5x4xi8>, tensor<f32>, tensor<1x4xi8> -> tensor<5x4xf32>
  %mm = graph.matmul %x, %w : tensor<2x3x5xf32>, tensor<5x4xf32> -> tensor<2x3x4xf32>
  %y = graph.cast %mm : tensor<2x3x4xf32> -> tensor<2x3x4xi32>
  func.return %y : tensor<2x3x4xi32>
}
