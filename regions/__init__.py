"""Domain: GB/T 2260 administrative divisions and the hotline tier tree built on them; no I/O beyond reading the shipped snapshot."""
