"""Analysing a solution: neural-collapse metrics (`metrics`), the synthesis rules of §6
(`synthesis`), geometry stability and the κ spectrum's role (`geometry`), and comparison
with the closed forms (`compare`, §7)."""
