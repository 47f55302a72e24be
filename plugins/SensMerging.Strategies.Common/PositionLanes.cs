namespace SensMerging.Strategies.Common;

/// <summary>
/// Sums over a tensor seen in blocks, accumulated in eight float64 lanes keyed by the element's position in the whole
/// tensor (mod 8) and added lane 0 to 7 at the end: every element lands in the same lane in the same order whatever the
/// block boundaries, so a streamed tensor's sums have the bits of the whole tensor's.
/// </summary>
internal static class PositionLanes
{
    /// <summary>How many lanes (one 256-bit vector of float32 positions).</summary>
    public const int Count = 8;

    /// <summary>The lanes added in a fixed order (lane 0 to 7).</summary>
    public static double Sum(double[] lanes)
    {
        double sum = 0;
        foreach (var lane in lanes)
        {
            sum += lane;
        }
        return sum;
    }
}
