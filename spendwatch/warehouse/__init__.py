"""The read side: every figure spendwatch shows, built on one spend query."""
