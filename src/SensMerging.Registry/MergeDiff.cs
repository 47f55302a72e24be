using System.Globalization;
using System.Text;

namespace SensMerging.Registry;

/// <summary>A scalar field that differs between two merges (values as text).</summary>
public sealed record FieldChange(string Name, string? Left, string? Right);

/// <summary>An input present in one merge only, or present in both with other values.</summary>
/// <param name="Name">The input's name.</param>
/// <param name="Change"><c>added</c> (right only), <c>removed</c> (left only) or <c>changed</c>.</param>
/// <param name="Details">What changed, one line each (reference, revision, commit, role, files).</param>
public sealed record InputChange(string Name, string Change, IReadOnlyList<FieldChange> Details);

/// <summary>A coefficient that differs (null where one side has no such expert or layer group).</summary>
public sealed record CoefficientChange(string Expert, string LayerGroup, double? Left, double? Right)
{
    public double? Delta => Left is { } l && Right is { } r ? r - l : null;
}

/// <summary>Differences between two merges: settings, parameters, inputs and coefficients.</summary>
public sealed record MergeDiff(
    string LeftId,
    string RightId,
    IReadOnlyList<FieldChange> Fields,
    IReadOnlyList<FieldChange> Parameters,
    IReadOnlyList<InputChange> Inputs,
    IReadOnlyList<CoefficientChange> Coefficients)
{
    /// <summary>Coefficients closer than this are equal.</summary>
    public const double CoefficientTolerance = 1e-12;

    public bool IsEmpty => Fields.Count == 0 && Parameters.Count == 0 && Inputs.Count == 0 && Coefficients.Count == 0;

    public static MergeDiff Compare(MergeRecord left, MergeRecord right)
    {
        ArgumentNullException.ThrowIfNull(left);
        ArgumentNullException.ThrowIfNull(right);
        var fields = new List<FieldChange>();
        AddIfDifferent(fields, "method", MergeSummary.MethodName(left), MergeSummary.MethodName(right));
        AddIfDifferent(fields, "strategy.version", left.Strategy?.Version, right.Strategy?.Version);
        AddIfDifferent(fields, "strategy.assemblySha256", left.Strategy?.AssemblySha256, right.Strategy?.AssemblySha256);
        for (var i = 0; i < Math.Max(left.Decorators.Count, right.Decorators.Count); i++)
        {
            var l = i < left.Decorators.Count ? left.Decorators[i] : null;
            var r = i < right.Decorators.Count ? right.Decorators[i] : null;
            AddIfDifferent(fields, $"decorators[{i}].version", l?.Plugin.Version, r?.Plugin.Version);
            AddIfDifferent(fields, $"decorators[{i}].assemblySha256", l?.Plugin.AssemblySha256, r?.Plugin.AssemblySha256);
        }
        AddIfDifferent(fields, "seed", left.Seed?.ToString(CultureInfo.InvariantCulture), right.Seed?.ToString(CultureInfo.InvariantCulture));
        AddIfDifferent(fields, "dtype", left.Dtype, right.Dtype);
        AddIfDifferent(fields, "outDtype", left.OutDtype, right.OutDtype);
        AddIfDifferent(fields, "computeDtype", left.ComputeDtype, right.ComputeDtype);
        AddIfDifferent(fields, "hostVersion", left.HostVersion, right.HostVersion);
        AddIfDifferent(fields, "status", left.Status.ToString().ToLowerInvariant(), right.Status.ToString().ToLowerInvariant());
        AddIfDifferent(fields, "warnings", left.Warnings.Count.ToString(CultureInfo.InvariantCulture), right.Warnings.Count.ToString(CultureInfo.InvariantCulture));

        var parameters = new List<FieldChange>();
        CompareMaps(parameters, string.Empty, left.Parameters, right.Parameters);
        foreach (var model in left.ModelParameters.Keys.Union(right.ModelParameters.Keys).Order(StringComparer.Ordinal))
        {
            CompareMaps(parameters, "models[" + model + "].", Get(left.ModelParameters, model), Get(right.ModelParameters, model));
        }
        // A decorator's settings (the values it ran with) and its configured parameters name the same things: a setting
        // is compared once, as the value in effect; a configured parameter only when neither side reports it as a setting.
        foreach (var d in left.Decorators.Concat(right.Decorators).Select(d => d.Plugin.Component).Distinct().Order(StringComparer.Ordinal))
        {
            var reported = Get(left.DecoratorSettings, d).Keys.Union(Get(right.DecoratorSettings, d).Keys).ToHashSet(StringComparer.Ordinal);
            CompareMaps(parameters, "decorators[" + d + "].",
                Unreported(left.Decorators.FirstOrDefault(x => x.Plugin.Component == d)?.Parameters, reported),
                Unreported(right.Decorators.FirstOrDefault(x => x.Plugin.Component == d)?.Parameters, reported));
        }
        foreach (var d in left.DecoratorSettings.Keys.Union(right.DecoratorSettings.Keys).Order(StringComparer.Ordinal))
        {
            CompareMaps(parameters, "decoratorSettings[" + d + "].", Get(left.DecoratorSettings, d), Get(right.DecoratorSettings, d));
        }

        return new MergeDiff(left.Id, right.Id, fields, parameters, CompareInputs(left, right), CompareCoefficients(left.Coefficients, right.Coefficients));
    }

    /// <summary>A readable rendering, one section per kind of difference.</summary>
    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"diff {LeftId} -> {RightId}").AppendLine();
        if (IsEmpty)
        {
            sb.AppendLine("no differences in settings, parameters, inputs or coefficients");
            return sb.ToString();
        }
        Section(sb, "Settings", Fields);
        Section(sb, "Parameters", Parameters);
        if (Inputs.Count > 0)
        {
            sb.AppendLine().AppendLine("Inputs");
            foreach (var input in Inputs)
            {
                sb.Append(CultureInfo.InvariantCulture, $"  {input.Name}: {input.Change}").AppendLine();
                foreach (var d in input.Details)
                {
                    sb.Append(CultureInfo.InvariantCulture, $"    {d.Name}: {d.Left ?? "-"} -> {d.Right ?? "-"}").AppendLine();
                }
            }
        }
        if (Coefficients.Count > 0)
        {
            sb.AppendLine().Append(CultureInfo.InvariantCulture, $"Coefficients ({Coefficients.Count} differ)").AppendLine();
            var width = Coefficients.Max(c => c.Expert.Length);
            foreach (var c in Coefficients)
            {
                sb.Append(CultureInfo.InvariantCulture,
                    $"  {c.Expert.PadRight(width)}  {c.LayerGroup,-20} {Num(c.Left),12} -> {Num(c.Right),-12} {(c.Delta is { } d ? d.ToString("+0.000000;-0.000000", CultureInfo.InvariantCulture) : string.Empty)}").AppendLine();
            }
        }
        return sb.ToString();
    }

    private static string Num(double? v) => v?.ToString("0.000000", CultureInfo.InvariantCulture) ?? "-";

    private static void Section(StringBuilder sb, string title, IReadOnlyList<FieldChange> changes)
    {
        if (changes.Count == 0)
        {
            return;
        }
        sb.AppendLine().AppendLine(title);
        var width = changes.Max(c => c.Name.Length);
        foreach (var c in changes)
        {
            sb.Append(CultureInfo.InvariantCulture, $"  {c.Name.PadRight(width)}  {c.Left ?? "-"} -> {c.Right ?? "-"}").AppendLine();
        }
    }

    private static IReadOnlyDictionary<string, ParameterValue> Get(IReadOnlyDictionary<string, IReadOnlyDictionary<string, ParameterValue>> maps, string key) =>
        maps.TryGetValue(key, out var m) ? m : new Dictionary<string, ParameterValue>();

    private static Dictionary<string, ParameterValue> Unreported(IReadOnlyDictionary<string, ParameterValue>? parameters, HashSet<string> reported) =>
        (parameters ?? new Dictionary<string, ParameterValue>()).Where(kv => !reported.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);

    private static void AddIfDifferent(List<FieldChange> changes, string name, string? left, string? right)
    {
        if (!string.Equals(left, right, StringComparison.Ordinal))
        {
            changes.Add(new FieldChange(name, left, right));
        }
    }

    private static void CompareMaps(List<FieldChange> changes, string prefix, IReadOnlyDictionary<string, ParameterValue> left, IReadOnlyDictionary<string, ParameterValue> right)
    {
        foreach (var key in left.Keys.Union(right.Keys).Order(StringComparer.Ordinal))
        {
            var l = left.TryGetValue(key, out var lv) ? lv : null;
            var r = right.TryGetValue(key, out var rv) ? rv : null;
            if (!Equals(l, r))
            {
                changes.Add(new FieldChange(prefix + key, l?.ToString(), r?.ToString()));
            }
        }
    }

    private static List<InputChange> CompareInputs(MergeRecord left, MergeRecord right)
    {
        var changes = new List<InputChange>();
        var names = left.Inputs.Select(i => i.Name).Concat(right.Inputs.Select(i => i.Name)).Distinct(StringComparer.Ordinal);
        foreach (var name in names)
        {
            var l = left.Inputs.FirstOrDefault(i => i.Name == name);
            var r = right.Inputs.FirstOrDefault(i => i.Name == name);
            if (l is null || r is null)
            {
                changes.Add(new InputChange(name, l is null ? "added" : "removed",
                    [new FieldChange("reference", l?.Reference, r?.Reference), new FieldChange("resolvedCommit", l?.ResolvedCommit, r?.ResolvedCommit)]));
                continue;
            }
            var details = new List<FieldChange>();
            AddIfDifferent(details, "reference", l.Reference, r.Reference);
            AddIfDifferent(details, "requestedRevision", l.RequestedRevision, r.RequestedRevision);
            AddIfDifferent(details, "resolvedCommit", l.ResolvedCommit, r.ResolvedCommit);
            AddIfDifferent(details, "role", l.Role.ToString().ToLowerInvariant(), r.Role.ToString().ToLowerInvariant());
            var lf = l.Files.ToDictionary(f => f.Path, StringComparer.Ordinal);
            var rf = r.Files.ToDictionary(f => f.Path, StringComparer.Ordinal);
            foreach (var path in lf.Keys.Union(rf.Keys).Order(StringComparer.Ordinal))
            {
                AddIfDifferent(details, "files[" + path + "].sha256", lf.GetValueOrDefault(path)?.Sha256, rf.GetValueOrDefault(path)?.Sha256);
            }
            if (details.Count > 0)
            {
                changes.Add(new InputChange(name, "changed", details));
            }
        }
        return changes;
    }

    private static List<CoefficientChange> CompareCoefficients(CoefficientSet? left, CoefficientSet? right)
    {
        var changes = new List<CoefficientChange>();
        if (left is null && right is null)
        {
            return changes;
        }
        var experts = (left?.Experts ?? []).Concat(right?.Experts ?? []).Distinct(StringComparer.Ordinal).ToList();
        var groups = (left?.LayerGroups ?? []).Concat(right?.LayerGroups ?? []).Distinct(StringComparer.Ordinal).ToList();
        foreach (var e in experts)
        {
            foreach (var g in groups)
            {
                var l = Lookup(left, e, g);
                var r = Lookup(right, e, g);
                if (l is null && r is null)
                {
                    continue;
                }
                if (l is null || r is null || Math.Abs(l.Value - r.Value) > CoefficientTolerance)
                {
                    changes.Add(new CoefficientChange(e, g, l, r));
                }
            }
        }
        return changes;
    }

    private static double? Lookup(CoefficientSet? set, string expert, string group)
    {
        if (set is null)
        {
            return null;
        }
        var e = IndexOf(set.Experts, expert);
        var g = IndexOf(set.LayerGroups, group);
        return e >= 0 && g >= 0 ? set.Values[e][g] : null;
    }

    private static int IndexOf(IReadOnlyList<string> list, string value)
    {
        for (var i = 0; i < list.Count; i++)
        {
            if (string.Equals(list[i], value, StringComparison.Ordinal))
            {
                return i;
            }
        }
        return -1;
    }
}
