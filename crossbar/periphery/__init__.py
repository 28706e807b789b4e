"""Periphery: DAC (:mod:`.dac`), conventional ADCs (:mod:`.adc`), the NL-ADC (:mod:`.nladc`) and
the activation registry (:mod:`.functions`)."""
