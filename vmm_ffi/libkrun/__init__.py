"""The libkrun backend: a microVM per sandbox.

``binding`` (cffi over libkrun's C API), ``vmm`` (the sandbox process that configures libkrun
and enters the VM), ``codesign`` (macOS: an interpreter entitled to use Hypervisor.framework).
"""
