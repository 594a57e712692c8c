// SPDX-License-Identifier: MIT
// Start-up code alone: subtracted from the shim image to give the shim's own size.
int main() { return 0; }
