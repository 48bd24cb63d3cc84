"""HL7 v2 over MLLP: the ``mllp`` source (PAM-FR ADT in, ACK after durability) and the ``mllp``
connector (CDA documents out in MDM messages). See docs/hl7v2.md."""

from connectors.hl7v2.listener import MllpSource, MllpSourceSettings

__all__ = ["MllpSource", "MllpSourceSettings"]
