"""Units of intensity and energy, once. Imports nothing, so the client and the records
that cross the wire can use them without numpy."""

JOULES_PER_KWH = 3_600_000.0

# How a forecast's values are stored: grams of CO2 (equivalent) per kWh, or WattTime's
# relative index, which ranks times within its own region and is never emissions.
GRAMS_PER_KWH = "gco2_per_kwh"
PERCENTILE = "percentile"
