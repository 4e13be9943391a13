"""Links between the server and each region: propagation, overhead, bandwidth.

A message of ``b`` bytes between the server and a region ``d`` km away takes

    overhead_s + rtt + 8 b / (bandwidth_mbps * 1e6)        seconds,
    rtt = 2 * route_factor * d / (FIBRE_FRACTION * c)

- ``d``: great-circle (haversine) distance on a sphere of the IUGG mean
  Earth radius, 6,371.0088 km (Moritz 2000, "Geodetic Reference System 1980",
  J. Geodesy 74).
- Light in silica fibre travels at about ``c / 1.47`` (group index of standard
  single-mode fibre, ITU-T G.652), i.e. about 2/3 of c, 204,000 km/s: about
  5 µs per km.
- ``route_factor`` (default 2.0): fibre routes are longer than the great
  circle and routers add delay. Singla et al. 2014 ("The Internet at the
  Speed of Light", HotNets) measured the median minimum ping RTT at about 3.2x
  the great-circle RTT at c in vacuum; at 2/3 c, a factor of 2 leaves it at 3x.
- One round trip per message: Flower's SuperNode pulls its instruction from
  the SuperLink (request + response) and pushes its reply (request +
  acknowledgement) over gRPC, on a connection it keeps open (no handshake per
  message).
- ``overhead_s`` (default 0.01 s): a fixed cost per message for
  serialisation and RPC processing; a nominal figure, not a measurement.
- Bandwidth: ``downlink_mbps`` carries the server's message to the region,
  ``uplink_mbps`` the reply (Mbit/s, 10^6 bit/s).

Limits: no congestion (each link has its whole bandwidth, whatever the other
regions send), no packet loss or retransmission, no TCP slow start, and
links are independent (the server's own link is never the bottleneck).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "EARTH_RADIUS_KM",
    "FIBRE_FRACTION",
    "SPEED_OF_LIGHT_KM_S",
    "Link",
    "great_circle_km",
]

SPEED_OF_LIGHT_KM_S = 299_792.458  # exact, SI definition of the metre
FIBRE_FRACTION = 2.0 / 3.0  # c / 1.47 in silica fibre (ITU-T G.652), rounded
EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius (Moritz 2000)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class Link:
    """The link between the server and one region."""

    distance_km: float
    downlink_mbps: float
    uplink_mbps: float
    route_factor: float = 2.0
    overhead_s: float = 0.01

    @property
    def rtt_s(self) -> float:
        """Round-trip propagation time over the fibre route."""
        return 2 * self.route_factor * self.distance_km / (FIBRE_FRACTION * SPEED_OF_LIGHT_KM_S)

    def download_s(self, nbytes: int) -> float:
        """Seconds for the server's message of ``nbytes`` to reach the region."""
        return self.overhead_s + self.rtt_s + 8.0 * nbytes / (self.downlink_mbps * 1e6)

    def upload_s(self, nbytes: int) -> float:
        """Seconds for the region's reply of ``nbytes`` to reach the server."""
        return self.overhead_s + self.rtt_s + 8.0 * nbytes / (self.uplink_mbps * 1e6)
