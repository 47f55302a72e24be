using System.Globalization;

namespace SensMerging.Core.SafeTensors;

/// <summary>Parses sizes such as <c>5B</c>, <c>500MB</c>, <c>2GB</c>, <c>1GiB</c>, <c>1048576</c>.</summary>
public static class ByteSize
{
    /// <summary>
    /// Parses a size in bytes. Units: <c>KB MB GB TB</c> (powers of 1000), <c>KiB MiB GiB TiB</c> (powers of 1024),
    /// and mergekit's counting suffixes <c>K M B</c> (thousand, million, billion: <c>5B</c> is 5,000,000,000 bytes, as
    /// in mergekit's <c>--out-shard-size 5B</c>). No unit means bytes. Case-insensitive; decimals allowed (<c>1.5GB</c>).
    /// </summary>
    public static long Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var s = text.Trim();
        var split = 0;
        while (split < s.Length && (char.IsAsciiDigit(s[split]) || s[split] == '.'))
        {
            split++;
        }
        var unit = s[split..].Trim().ToUpperInvariant();
        if (split == 0 || !decimal.TryParse(s.AsSpan(0, split), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
        {
            throw new FormatException($"size '{text}' does not start with a number (examples: 5B, 500MB, 2GB, 1GiB)");
        }
        decimal multiplier = unit switch
        {
            "" => 1,
            "K" or "KB" => 1_000m,
            "M" or "MB" => 1_000_000m,
            "B" or "G" or "GB" => 1_000_000_000m,
            "T" or "TB" => 1_000_000_000_000m,
            "KIB" => 1L << 10,
            "MIB" => 1L << 20,
            "GIB" => 1L << 30,
            "TIB" => 1L << 40,
            _ => throw new FormatException($"size '{text}' has unknown unit '{s[split..].Trim()}' (use KB, MB, GB, TB, KiB, MiB, GiB, TiB, or K/M/B for thousand/million/billion)"),
        };
        var bytes = decimal.Floor(number * multiplier);
        return bytes is < 1 or > long.MaxValue
            ? throw new FormatException($"size '{text}' must be at least 1 byte")
            : (long)bytes;
    }
}
