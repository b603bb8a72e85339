#![no_std]
// Library target only so the userspace crate can name this package as a build-dependency.
