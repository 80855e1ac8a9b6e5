// RUN: ember-opt %s --pipeline instrument-kernels | filecheck %s
// The input is loops IR as lower-kernels-to-loops writes it, kernels reduced to a loop each.
// The counters at run time: tests/tools/test_profile.py.

// Each kernel call of the entry function is bracketed by reads of the cycle counter, and the
// difference is added to its slot of a trailing `profile` argument: one slot per call site
// (@negate is called twice), and slot 3 for the whole function. ember.profile_sites says what each slot is: the callee, the lowering's summary
// and flops where it set them (else the operand shapes and 0), and the ONNX node.
// CHECK-LABEL: func.func @main(
// CHECK-SAME:    %[[P:[^:]*]]: memref<4xi64> {ember.role = "profile"})
// CHECK-SAME:    ember.profile_sites = [{callee = "negate", summary = "negate 16", flops = 16 : i64, shapes = "16 -> 16", op_type = "Neg", node = "neg_0", absorbed = []}, {callee = "copy", summary = "16 -> 16", flops = 0 : i64, shapes = "16 -> 16", op_type = "", node = "", absorbed = []}, {callee = "negate", summary = "negate 16", flops = 16 : i64, shapes = "16 -> 16", op_type = "", node = "", absorbed = []}]
// CHECK:         %[[T0:.*]] = func.call @llvm.readcyclecounter() : () -> i64
// CHECK-NEXT:    %[[A:.*]] = func.call @llvm.readcyclecounter() : () -> i64
// CHECK-NEXT:    func.call @negate(%x, %y)
// CHECK-NEXT:    %[[B:.*]] = func.call @llvm.readcyclecounter() : () -> i64
// CHECK-NEXT:    %[[SLOT0:.*]] = arith.constant 0 : index
// CHECK-NEXT:    %[[D:.*]] = arith.subi %[[B]], %[[A]] : i64
// CHECK-NEXT:    %[[OLD:.*]] = memref.load %[[P]][%[[SLOT0]]]
// CHECK-NEXT:    %[[NEW:.*]] = arith.addi %[[OLD]], %[[D]] : i64
// CHECK-NEXT:    memref.store %[[NEW]], %[[P]][%[[SLOT0]]]
// CHECK:         func.call @copy(%y, %z)
// CHECK:         arith.constant 1 : index
// CHECK:         func.call @negate(%z, %w)
// CHECK:         arith.constant 2 : index
// CHECK:         %[[END:.*]] = func.call @llvm.readcyclecounter() : () -> i64
// CHECK-NEXT:    arith.constant 3 : index
// CHECK-NEXT:    arith.subi %[[END]], %[[T0]] : i64
// CHECK:         func.return

// Left alone: the kernels' own bodies (only the entry function's calls are timed).
// CHECK-LABEL: func.func private @negate(
// CHECK-NOT:     func.call @llvm.readcyclecounter
// CHECK-LABEL: func.func private @copy(
// CHECK-NOT:     func.call @llvm.readcyclecounter
// The counter intrinsic, declared once.
// CHECK:       func.func private @llvm.readcyclecounter() -> i64
builtin.module {
  func.func @main(%x: memref<16xf32>, %y: memref<16xf32>, %z: memref<16xf32>, %w: memref<16xf32>) attributes {ember.input_names = ["x"], ember.output_names = ["y", "z", "w"]} {
    func.call @negate(%x, %y) {ember.origin = {op_type = "Neg", node = "neg_0"}} : (memref<16xf32>, memref<16xf32>) -> ()
    func.call @copy(%y, %z) : (memref<16xf32>, memref<16xf32>) -> ()
    func.call @negate(%z, %w) : (memref<16xf32>, memref<16xf32>) -> ()
    func.return
  }
  func.func private @negate(%in: memref<16xf32>, %out: memref<16xf32>) attributes {ember.kernel_summary = "negate 16", ember.kernel_flops = 16 : i64} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c16 = arith.constant 16 : index
    scf.for %i = %c0 to %c16 step %c1 {
      %v = memref.load %in[%i] : memref<16xf32>
      %n = arith.negf %v : f32
      memref.store %n, %out[%i] : memref<16xf32>
    }
    func.return
  }
  func.func private @copy(%in: memref<16xf32>, %out: memref<16xf32>) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c16 = arith.constant 16 : index
    scf.for %i = %c0 to %c16 step %c1 {
      %v = memref.load %in[%i] : memref<16xf32>
      memref.store %v, %out[%i] : memref<16xf32>
    }
    func.return
  }
}
