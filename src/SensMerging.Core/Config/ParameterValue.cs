using System.Globalization;

namespace SensMerging.Core.Config;

/// <summary>
/// A configured parameter value, mergekit style: a scalar, a list interpolated over layer depth (a "gradient"), or a
/// list of <c>{filter, value}</c> entries where the first entry whose filter is a substring of the tensor name (or that
/// has no filter, or filter <c>*</c>) wins.
/// </summary>
public abstract record ParameterValue(int Line)
{
    /// <summary>
    /// The value for a tensor at depth <paramref name="depth"/> (0 for the first block, 1 for the last), or null when no
    /// filter entry matches (the lookup then falls back to the next level: model, global, default).
    /// Scalars are <see cref="double"/>, <see cref="long"/>, <see cref="bool"/> or <see cref="string"/>.
    /// </summary>
    public abstract object? Evaluate(string tensorName, Func<double> depth);
}

/// <summary>One value for every tensor.</summary>
public sealed record ScalarParameter(object Value, int Line) : ParameterValue(Line)
{
    public override object? Evaluate(string tensorName, Func<double> depth) => Value;

    public override string ToString() => Convert.ToString(Value, CultureInfo.InvariantCulture) ?? string.Empty;
}

/// <summary>
/// Values spread evenly over the depth: with n values and depth t in [0, 1], position p = t (n - 1) and the result is
/// the linear interpolation between values floor(p) and floor(p) + 1. Non-numeric lists pick value floor(p).
/// </summary>
public sealed record GradientParameter(IReadOnlyList<object> Values, int Line) : ParameterValue(Line)
{
    public bool IsNumeric => Values.All(v => v is double or long);

    public override object? Evaluate(string tensorName, Func<double> depth)
    {
        ArgumentNullException.ThrowIfNull(depth);
        var t = depth();
        var scaled = t * (Values.Count - 1);
        var i0 = (int)Math.Floor(scaled);
        i0 = Math.Clamp(i0, 0, Values.Count - 1);
        if (!IsNumeric)
        {
            return Values[i0];
        }
        var i1 = Math.Min(Values.Count - 1, i0 + 1);
        var frac = scaled - i0;
        var v0 = Convert.ToDouble(Values[i0], CultureInfo.InvariantCulture);
        var v1 = Convert.ToDouble(Values[i1], CultureInfo.InvariantCulture);
        return (1 - frac) * v0 + frac * v1;
    }

    public override string ToString() => "[" + string.Join(", ", Values.Select(v => Convert.ToString(v, CultureInfo.InvariantCulture))) + "]";
}

/// <summary>One entry of a filter list; <see cref="Filter"/> null (or <c>*</c>) matches every tensor.</summary>
public sealed record FilterEntry(string? Filter, ParameterValue Value, int Line)
{
    public bool Matches(string tensorName)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        return Filter is null || Filter == "*" || tensorName.Contains(Filter, StringComparison.Ordinal);
    }
}

/// <summary>A list of filtered values: the first matching entry decides.</summary>
public sealed record FilteredParameter(IReadOnlyList<FilterEntry> Entries, int Line) : ParameterValue(Line)
{
    public override object? Evaluate(string tensorName, Func<double> depth)
    {
        foreach (var entry in Entries)
        {
            if (entry.Matches(tensorName))
            {
                return entry.Value.Evaluate(tensorName, depth);
            }
        }
        return null;
    }
}
