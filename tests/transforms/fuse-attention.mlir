// RUN: ember-opt %s --random-weights --pipeline fuse-attention,dce | filecheck %s
// The values before and after: tests/transforms/test_graph_passes.py::test_pass_files_keep_values

// softmax(q @ k_t * scale + mask) @ v, softmax over the keys, becomes one graph.attention with
// the scale read from the constant (a random one here: --random-weights).
// CHECK-LABEL: func.func @scaled_masked(
// CHECK:         %o = graph.attention %q, %kt, %v mask %mask {scale = {{.*}} : f32, seq_major = array<i64: 0, 0, 0>} : tensor<1x2x5x4xf32>, tensor<1x2x4x7xf32>, tensor<1x2x7x4xf32>, tensor<1x1x1x7xf32> -> tensor<1x2x5x4xf32>
// CHECK-NEXT:    func.return %o
// CHECK-NOT:     graph.softmax
func.func @scaled_masked(%q: tensor<1x2x5x4xf32>, %kt: tensor<1x2x4x7xf32>, %v: tensor<1x2x7x4xf32>, %mask: tensor<1x1x1x7xf32>) -> tensor<1x2x5x4xf32> {
  %c = graph.constant "scale" : tensor<f32>
  %s = graph.matmul %q, %kt : tensor<1x2x5x4xf32>, tensor<1x2x4x7xf32> -> tensor<1x2x5x7xf32>
  %m = graph.mul %s, %c : tensor<1x2x5x7xf32>, tensor<f32> -> tensor<1x2x5x7xf32>
  %a = graph.add %m, %mask : tensor<1x2x5x7xf32>, tensor<1x1x1x7xf32> -> tensor<1x2x5x7xf32>
  %p = graph.softmax %a {axis = 3 : i64} : tensor<1x2x5x7xf32> -> tensor<1x2x5x7xf32>
  %o = graph.matmul %p, %v : tensor<1x2x5x7xf32>, tensor<1x2x7x4xf32> -> tensor<1x2x5x4xf32>
  func.return %o : tensor<1x2x5x4xf32>
}

// The exporter's head-split transposes ([B, S, H, D] <-> [B, H, S, D]) are absorbed:
// seq_major marks q, v and the output as sequence-major.
// CHECK-LABEL: func.func @head_split_transposes(
// CHECK-NOT:     graph.transpose
// CHECK:         %t = graph.attention %x, %kt, %y mask %mask {scale = {{.*}} : f32, seq_major = array<i64: 1, 1, 1>} : tensor<1x5x2x4xf32>, tensor<1x2x4x7xf32>, tensor<1x7x2x4xf32>, tensor<1x1x1x7xf32> -> tensor<1x5x2x4xf32>
// CHECK-NEXT:    func.return %t
func.func @head_split_transposes(%x: tensor<1x5x2x4xf32>, %kt: tensor<1x2x4x7xf32>, %y: tensor<1x7x2x4xf32>, %mask: tensor<1x1x1x7xf32>) -> tensor<1x5x2x4xf32> {
  %q = graph.transpose %x {perm = array<i64: 0, 2, 1, 3>} : tensor<1x5x2x4xf32> -> tensor<1x2x5x4xf32>
  %v = graph.transpose %y {perm = array<i64: 0, 2, 1, 3>} : tensor<1x7x2x4xf32> -> tensor<1x2x7x4xf32>
  %c = graph.constant "scale2" : tensor<f32>
  %s = graph.matmul %q, %kt : tensor<1x2x5x4xf32>, tensor<1x2x4x7xf32> -> tensor<1x2x5x7xf32>
  %m = graph.mul %s, %c : tensor<1x2x5x7xf32>, tensor<f32> -> tensor<1x2x5x7xf32>
  %a = graph.add %m, %mask : tensor<1x2x5x7xf32>, tensor<1x1x1x7xf32> -> tensor<1x2x5x7xf32>
  %p = graph.softmax %a {axis = 3 : i64} : tensor<1x2x5x7xf32> -> tensor<1x2x5x7xf32>
  %o = graph.matmul %p, %v : tensor<1x2x5x7xf32>, tensor<1x2x7x4xf32> -> tensor<1x2x5x4xf32>
  %t = graph.transpose %o {perm = array<i64: 0, 2, 1, 3>} : tensor<1x2x5x4xf32> -> tensor<1x5x2x4xf32>
  func.return %t : tensor<1x5x2x4xf32>
}

// Left alone: a softmax over the queries (axis 2), not the keys.
// CHECK-LABEL: func.func @softmax_over_queries(
// CHECK-NOT:     graph.attention
// CHECK:         graph.softmax %a {axis = 2 : i64}
// CHECK:         graph.matmul %p, %v
func.func @softmax_over_queries(%q: tensor<1x2x5x4xf32>, %kt: tensor<1x2x4x7xf32>, %v: tensor<1x2x7x4xf32>, %mask: tensor<1x1x1x7xf32>) -> tensor<1x2x5x4xf32> {
  %c = graph.constant "scale3" : tensor<f32>
  %s = graph.matmul %q, %kt : tensor<1x2x5x4xf32>, tensor<1x2x4x7xf32> -> tensor<1x2x5x7xf32>
  %m = graph.mul %s, %c : tensor<1x2x5x7xf32>, tensor<f32> -> tensor<1x2x5x7xf32>
  %a = graph.add %m, %mask : tensor<1x2x5x7xf32>, tensor<1x1x1x7xf32> -> tensor<1x2x5x7xf32>
  %p = graph.softmax %a {axis = 2 : i64} : tensor<1x2x5x7xf32> -> tensor<1x2x5x7xf32>
  %o = graph.matmul %p, %v : tensor<1x2x5x7xf32>, tensor<1x2x7x4xf32> -> tensor<1x2x5x4xf32>
  func.return %o : tensor<1x2x5x4xf32>
}

// Left alone: a log softmax.
// CHECK-LABEL: func.func @log_softmax(
// CHECK-NOT:     graph.attention
// CHECK:         graph.softmax %a {axis = 3 : i64, log}
func.func @log_softmax(%q: tensor<1x2x5x4xf32>, %kt: tensor<1x2x4x7xf32>, %v: tensor<1x2x7x4xf32>, %mask: tensor<1x1x1x7xf32>) -> tensor<1x2x5x4xf32> {
  %c = graph.constant "scale4" : tensor<f32>
  %s = graph.matmul %q, %kt : tensor<1x2x5x4xf32>, tensor<1x2x4x7xf32> -> tensor<1x2x5x7xf32>
  %m = graph.mul %s, %c : tensor<1x2x5x7xf32>, tensor<f32> -> tensor<1x2x5x7xf32>
  %a = graph.add %m, %mask : tensor<1x2x5x7xf32>, tensor<1x1x1x7xf32> -> tensor<1x2x5x7xf32>
  %p = graph.softmax %a {axis = 3 : i64, log} : tensor<1x2x5x7xf32> -> tensor<1x2x5x7xf32>
  %o = graph.matmul %p, %v : tensor<1x2x5x7xf32>, tensor<1x2x7x4xf32> -> tensor<1x2x5x4xf32>
  func.return %o : tensor<1x2x5x4xf32>
}

// Left alone: the probabilities are also a result (the fused op does not produce them).
// CHECK-LABEL: func.func @probabilities_escape(
// CHECK-NOT:     graph.attention
// CHECK:         %p = graph.softmax
// CHECK:         func.return %o, %p
func.func @probabilities_escape(%q: tensor<1x2x5x4xf32>, %kt: tensor<1x2x4x7xf32>, %v: tensor<1x2x7x4xf32>, %mask: tensor<1x1x1x7xf32>) -> (tensor<1x2x5x4xf32>, tensor<1x2x5x7xf32>) {
  %c = graph.constant "scale5" : tensor<f32>
  %s = graph.matmul %q, %kt : tensor<1x2x5x4xf32>, tensor<1x2x4x7xf32> -> tensor<1x2x5x7xf32>
  %m = graph.mul %s, %c : tensor<1x2x5x7xf32>, tensor<f32> -> tensor<1x2x5x7xf32>
  %a = graph.add %m, %mask : tensor<1x2x5x7xf32>, tensor<1x1x1x7xf32> -> tensor<1x2x5x7xf32>
  %p = graph.softmax %a {axis = 3 : i64} : tensor<1x2x5x7xf32> -> tensor<1x2x5x7xf32>
  %o = graph.matmul %p, %v : tensor<1x2x5x7xf32>, tensor<1x2x7x4xf32> -> tensor<1x2x5x4xf32>
  func.return %o, %p : tensor<1x2x5x4xf32>, tensor<1x2x5x7xf32>
}

// Left alone: a [.., 1] mask adds one value per row (legal, but the kernel reads a key vector
// of mask per tile, so it is not matched).
// CHECK-LABEL: func.func @mask_per_row(
// CHECK-NOT:     graph.attention
// CHECK:         graph.softmax
func.func @mask_per_row(%q: tensor<1x2x5x4xf32>, %kt: tensor<1x2x4x7xf32>, %v: tensor<1x2x7x4xf32>, %mask: tensor<1x2x5x1xf32>) -> tensor<1x2x5x4xf32> {
  %c = graph.constant "scale6" : tensor<f32>
  %s = graph.matmul %q, %kt : tensor<1x2x5x4xf32>, tensor<1x2x4x7xf32> -> tensor<1x2x5x7xf32>
  %m = graph.mul %s, %c : tensor<1x2x5x7xf32>, tensor<f32> -> tensor<1x2x5x7xf32>
  %a = graph.add %m, %mask : tensor<1x2x5x7xf32>, tensor<1x2x5x1xf32> -> tensor<1x2x5x7xf32>
  %p = graph.softmax %a {axis = 3 : i64} : tensor<1x2x5x7xf32> -> tensor<1x2x5x7xf32>
  %o = graph.matmul %p, %v : tensor<1x2x5x7xf32>, tensor<1x2x7x4xf32> -> tensor<1x2x5x4xf32>
  func.return %o : tensor<1x2x5x4xf32>
}

// Left alone: value heads wider than the kernel keeps in registers (600 columns).
// CHECK-LABEL: func.func @wide_value_heads(
// CHECK-NOT:     graph.attention
// CHECK:         graph.softmax
// CHECK-LABEL: }
func.func @wide_value_heads(%q: tensor<1x2x5x4xf32>, %kt: tensor<1x2x4x7xf32>, %v: tensor<1x2x7x600xf32>, %mask: tensor<1x1x1x7xf32>) -> tensor<1x2x5x600xf32> {
  %c = graph.constant "scale7" : tensor<f32>
  %s = graph.matmul %q, %kt : tensor<1x2x5x4xf32>, tensor<1x2x4x7xf32> -> tensor<1x2x5x7xf32>
  %m = graph.mul %s, %c : tensor<1x2x5x7xf32>, tensor<f32> -> tensor<1x2x5x7xf32>
  %a = graph.add %m, %mask : tensor<1x2x5x7xf32>, tensor<1x1x1x7xf32> -> tensor<1x2x5x7xf32>
  %p = graph.softmax %a {axis = 3 : i64} : tensor<1x2x5x7xf32> -> tensor<1x2x5x7xf32>
  %o = graph.matmul %p, %v : tensor<1x2x5x7xf32>, tensor<1x2x7x600xf32> -> tensor<1x2x5x600xf32>
  func.return %o : tensor<1x2x5x600xf32>
}
