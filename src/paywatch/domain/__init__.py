"""Pure money logic: amounts, invoice status evaluation and transfer matching. No I/O, no clock."""
