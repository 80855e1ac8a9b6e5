// RUN: ember-opt %s --pipeline plan-memory | filecheck %s
// Buffers with `?` dims (runtime extents, issue 10 foundation): the static buffer keeps its
// static place (offset 0; ember.arena_bytes = 64, the static part), the dynamic ones are
// placed above it by an offset program at the start of the entry, computed from the extent
// argument %n: each at the end of the dynamic buffers placed before it that are alive at the
// same time (sizes rounded up to 64 bytes), or over its dying input. The arena is memref<?xi8>, and a public
// @main_arena_bytes(%n) repeats the program and returns the arena's size.
// Numerics of the same program at seven sizes: test_plan_memory_runtime_sizes.py.
// CHECK-LABEL: func.func @main(
// CHECK-SAME:    %n: index {ember.extent_of = array<i64: 0, 0, 2, 0>}, %[[ARENA:[^:]*]]: memref<?xi8> {ember.role = "arena"})
// CHECK-SAME:    ember.arena_function = "main_arena_bytes", ember.arena_bytes = 64 : i64
// Sizes in bytes: 256 per row; %c's rows are (2n)/2, the index arithmetic cloned up here.
// CHECK:         %[[ROW:.*]] = arith.constant 256 : index
// CHECK-NEXT:    %[[A_BYTES:.*]] = arith.muli %n, %[[ROW]] : index
// CHECK-NEXT:    %[[B_BYTES:.*]] = arith.muli %n, %[[ROW]] : index
// CHECK:         %[[HALF:.*]] = arith.divui
// CHECK-NEXT:    %[[C_BYTES:.*]] = arith.muli %[[HALF]], %[[ROW]] : index
// %a first, right above the static part; %b at %a's end (%a is alive until the last
// kernel); %c, of %b's type, over %b, which dies at %c's kernel (the in-place rule: every
// buffer placed before %c and alive with it, %a, is alive with %b too, so it lies below).
// CHECK-NEXT:    %[[BASE:.*]] = arith.constant 64 : index
// CHECK-NEXT:    %[[ROUND:.*]] = arith.constant 63 : index
// CHECK-NEXT:    %[[A_UP:.*]] = arith.addi %[[A_BYTES]], %[[ROUND]] : index
// CHECK-NEXT:    %[[MASK:.*]] = arith.constant -64 : index
// CHECK-NEXT:    %[[A_SIZE:.*]] = arith.andi %[[A_UP]], %[[MASK]] : index
// CHECK-NEXT:    %[[A_END:.*]] = arith.addi %[[BASE]], %[[A_SIZE]] : index
// CHECK-NEXT:    %[[B_UP:.*]] = arith.addi %[[B_BYTES]], %[[ROUND]] : index
// CHECK-NEXT:    %[[B_SIZE:.*]] = arith.andi %[[B_UP]], %[[MASK]] : index
// CHECK-NEXT:    %[[B_END:.*]] = arith.addi %[[A_END]], %[[B_SIZE]] : index
// CHECK:         %[[S_AT:[0-9]+]] = arith.constant 0 : index
// CHECK-NEXT:    %s = memref.view %[[ARENA]][%[[S_AT]]][] : memref<?xi8> to memref<1xf32>
// CHECK:         %a = memref.view %[[ARENA]][%[[BASE]]][%rows] : memref<?xi8> to memref<?x64xf32>
// CHECK:         %b = memref.view %[[ARENA]][%[[A_END]]][%rows] : memref<?xi8> to memref<?x64xf32>
// CHECK:         %c = memref.view %[[ARENA]][%[[A_END]]][%half{{.*}}] : memref<?xi8> to memref<?x64xf32>
// CHECK-NOT:     memref.alloc
// CHECK-LABEL: func.func @main_arena_bytes(
// CHECK-SAME:    %[[N:.*]]: index) -> index {
// CHECK:         arith.muli %[[N]]
// CHECK:         %[[C64:[0-9]+]] = arith.constant 64 : index
// At least 64 bytes (what a static arena takes too).
// CHECK:         %[[BYTES:[0-9]+]] = arith.maxui %{{[0-9]+}}, %[[C64]] : index
// CHECK-NEXT:    func.return %[[BYTES]] : index

builtin.module {
  func.func @main(%x: memref<?x64xf32>, %w: memref<1xf32>, %y: memref<?x64xf32>,
                  %n: index {ember.extent_of = array<i64: 0, 0, 2, 0>})
      attributes {ember.input_names = ["x", "w"], ember.output_names = ["y"]} {
    %c0 = arith.constant 0 : index
    %rows = memref.dim %x, %c0 : memref<?x64xf32>
    %s = memref.alloc() : memref<1xf32>
    kernel.elementwise(%w) -> %s : (memref<1xf32>) -> memref<1xf32> {
    ^bb0(%v: f32):
      %e = math.exp %v : f32
      kernel.yield %e : f32
    }
    %a = memref.alloc(%rows) : memref<?x64xf32>
    kernel.elementwise(%x) -> %a : (memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32):
      %e = math.exp %v : f32
      kernel.yield %e : f32
    }
    %b = memref.alloc(%rows) : memref<?x64xf32>
    kernel.elementwise(%a, %x) -> %b : (memref<?x64xf32>, memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32, %u: f32):
      %e = arith.addf %v, %u : f32
      kernel.yield %e : f32
    }
    %two = arith.constant 2 : index
    %wide = arith.muli %n, %two : index
    %half = arith.divui %wide, %two : index
    %c = memref.alloc(%half) : memref<?x64xf32>
    kernel.elementwise(%b, %s) -> %c : (memref<?x64xf32>, memref<1xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32, %u: f32):
      %e = arith.mulf %v, %v : f32
      %f = arith.mulf %e, %u : f32
      kernel.yield %f : f32
    }
    kernel.elementwise(%c, %a) -> %y : (memref<?x64xf32>, memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32, %u: f32):
      %e = arith.subf %v, %u : f32
      kernel.yield %e : f32
    }
    func.return
  }
}
