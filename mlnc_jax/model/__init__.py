"""The model: label distributions (`labels`), losses as records (`losses`), the UFM
configuration and objective (`ufm`), and the checks (`checks`, `budget`) and errors every
other stage uses. Imports nothing from the rest of the package."""
