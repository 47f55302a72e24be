namespace SensMerging.Host.Plugins;

/// <summary>
/// Orders plugin versions as established plugin hosts do: numerically by their dotted release part
/// (<c>1.10.0</c> is newer than <c>1.9.2</c>), a release newer than a pre-release of the same numbers
/// (<c>1.0.0</c> over <c>1.0.0-rc.1</c>); build metadata after <c>+</c> is ignored.
/// </summary>
public static class PluginVersion
{
    /// <summary>True when <paramref name="candidate"/> is a strictly newer version than <paramref name="current"/>.</summary>
    public static bool IsNewer(string candidate, string current) => Compare(candidate, current) > 0;

    /// <summary>Negative, zero or positive as <paramref name="a"/> is older, equal or newer than <paramref name="b"/>.</summary>
    public static int Compare(string a, string b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var (releaseA, preA) = Split(a);
        var (releaseB, preB) = Split(b);
        for (var i = 0; i < Math.Max(releaseA.Length, releaseB.Length); i++)
        {
            var order = CompareIdentifier(i < releaseA.Length ? releaseA[i] : "0", i < releaseB.Length ? releaseB[i] : "0");
            if (order != 0)
            {
                return order;
            }
        }
        if (preA.Length == 0 || preB.Length == 0)
        {
            return (preA.Length == 0 ? 1 : 0) - (preB.Length == 0 ? 1 : 0);
        }
        for (var i = 0; i < Math.Min(preA.Length, preB.Length); i++)
        {
            var order = CompareIdentifier(preA[i], preB[i]);
            if (order != 0)
            {
                return order;
            }
        }
        return preA.Length.CompareTo(preB.Length);
    }

    private static (string[] Release, string[] PreRelease) Split(string version)
    {
        var text = version.Trim();
        var plus = text.IndexOf('+', StringComparison.Ordinal);
        if (plus >= 0)
        {
            text = text[..plus];
        }
        var dash = text.IndexOf('-', StringComparison.Ordinal);
        var release = dash >= 0 ? text[..dash] : text;
        var pre = dash >= 0 ? text[(dash + 1)..] : string.Empty;
        return (release.Split('.'), pre.Length == 0 ? [] : pre.Split('.'));
    }

    /// <summary>Numeric identifiers compare as numbers and sort before alphanumeric ones, which compare ordinally.</summary>
    private static int CompareIdentifier(string a, string b)
    {
        var numericA = ulong.TryParse(a, out var na);
        var numericB = ulong.TryParse(b, out var nb);
        if (numericA && numericB)
        {
            return na.CompareTo(nb);
        }
        if (numericA != numericB)
        {
            return numericA ? -1 : 1;
        }
        return string.CompareOrdinal(a, b);
    }
}
