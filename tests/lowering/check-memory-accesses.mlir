// RUN: ember-opt %s --pipeline check-memory-accesses | filecheck %s
// The input is loops IR as lower-kernels-to-loops writes it, kernels reduced to a loop each.
// An out-of-bounds access at run time: tests/runtime/test_kernel_errors.py.

// A kernel that took no status record gets it as a trailing argument, and its call becomes
// a status site: after the call, the entry function records the site of the first error.
// CHECK-LABEL: func.func @main(
// CHECK-SAME:    %[[STATUS:[^:]*]]: memref<8xi64> {ember.role = "status"})
// CHECK-SAME:    ember.status_sites = [{kernel = "negate"}]
// CHECK:         func.call @negate(%x, %y, %[[STATUS]])
// CHECK:         arith.cmpi ne
// CHECK:         memref.store {{.*}}, %[[STATUS]]
// Left alone: a call that already passes the status record to a checked kernel.
// CHECK:         func.call @checked(%y, %z, %[[STATUS]])
// CHECK-NEXT:    func.return

// Each load and store: its linear offset compared (unsigned) with the buffer's last valid
// start (16 - 1 scalar, 16 - 8 for 8 lanes); out of bounds records OUT_OF_BOUNDS (code 2) in
// the status record and reads or writes element 0 instead.
// CHECK-LABEL: func.func private @negate(
// CHECK-SAME:    %[[IN:[^:]*]]: memref<16xf32>, %[[OUT:[^:]*]]: memref<16xf32>, %[[S:[^:]*]]: memref<8xi64>)
// CHECK-SAME:    attributes {ember.reports_status, ember.memory_checked}
// CHECK-DAG:     %[[LAST:[0-9]+]] = arith.constant 15 : index
// CHECK-DAG:     %[[LAST8:[0-9]+]] = arith.constant 8 : index
// CHECK:         scf.for %i
// CHECK:         %[[BAD:.*]] = arith.cmpi ugt, %{{.*}}, %[[LAST]] : index
// CHECK-NEXT:    scf.if %[[BAD]] {
// CHECK:           memref.store {{.*}}, %[[S]]
// CHECK:         %[[SAFE:.*]] = arith.select %[[BAD]], %{{.*}}, %i : index
// CHECK-NEXT:    memref.load %[[IN]][%[[SAFE]]] : memref<16xf32>
// CHECK:         arith.cmpi ugt, %{{.*}}, %[[LAST]] : index
// CHECK:         memref.store {{.*}}, %[[OUT]][%{{.*}}] : memref<16xf32>
// CHECK:         %[[VBAD:.*]] = arith.cmpi ugt, %{{.*}}, %[[LAST8]] : index
// CHECK:         %[[VSAFE:.*]] = arith.select %[[VBAD]]
// CHECK-NEXT:    vector.load %[[IN]][%[[VSAFE]]] : memref<16xf32>, vector<8xf32>
// Left alone: a masked load (its masked-off lanes may lie outside the buffer).
// CHECK-NOT:     arith.cmpi
// CHECK:         vector.maskedload %[[IN]][%c8], %mask, %pass
// CHECK:         func.return

// Left alone: a kernel already checked.
// CHECK-LABEL: func.func private @checked(
// CHECK-NOT:     arith.cmpi
// CHECK:         func.return
builtin.module {
  func.func @main(%x: memref<16xf32>, %y: memref<16xf32>, %z: memref<16xf32>, %status: memref<8xi64> {ember.role = "status"}) attributes {ember.input_names = ["x"], ember.output_names = ["y", "z"], ember.status_sites = []} {
    func.call @negate(%x, %y) : (memref<16xf32>, memref<16xf32>) -> ()
    func.call @checked(%y, %z, %status) : (memref<16xf32>, memref<16xf32>, memref<8xi64>) -> ()
    func.return
  }
  func.func private @negate(%in: memref<16xf32>, %out: memref<16xf32>) {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c8 = arith.constant 8 : index
    %c16 = arith.constant 16 : index
    scf.for %i = %c0 to %c16 step %c1 {
      %v = memref.load %in[%i] : memref<16xf32>
      %n = arith.negf %v : f32
      memref.store %n, %out[%i] : memref<16xf32>
    }
    %w = vector.load %in[%c0] : memref<16xf32>, vector<8xf32>
    %mask = vector.create_mask %c8 : vector<8xi1>
    %pass = arith.constant dense<0.000000e+00> : vector<8xf32>
    %m = vector.maskedload %in[%c8], %mask, %pass : memref<16xf32>, vector<8xi1>, vector<8xf32> into vector<8xf32>
    func.return
  }
  func.func private @checked(%in: memref<16xf32>, %out: memref<16xf32>, %s: memref<8xi64>) attributes {ember.reports_status, ember.memory_checked} {
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
