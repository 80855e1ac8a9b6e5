#!/bin/sh
ember-opt /work/main/ember-repro-20261130-134546-200067/input.mlir --weights /work/main/ember-repro-20261130-134546-200067/input.npz --pipeline canonicalize
