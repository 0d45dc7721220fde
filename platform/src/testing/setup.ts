// Loaded before every test file (vitest setupFiles): @peculiar/x509 needs its crypto provider.
import "../pki/x509.js";
