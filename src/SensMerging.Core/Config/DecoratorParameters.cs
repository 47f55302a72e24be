using System.Globalization;
using SensMerging.Abstractions;

namespace SensMerging.Core.Config;

/// <summary>
/// A decorator's parameters as the host hands them (<see cref="DecoratorContext.Parameters"/> and
/// <see cref="DecoratorContext.LayerGroupParameters"/>): for the merge as a whole, and for each layer group.
/// </summary>
/// <param name="Merge">Every declared parameter, defaults applied; a per-group one at its first group's value.</param>
/// <param name="LayerGroups">Every declared parameter for each layer group, in the order the groups were given.</param>
public sealed record DecoratorParameters(ResolvedParameters Merge, IReadOnlyList<ResolvedParameters> LayerGroups)
{
    /// <summary>
    /// Resolves a decorator's configured values with the strategies' parameter model, per layer group instead of per
    /// tensor: a value, a list interpolated over depth (a gradient) or a list of <c>{filter, value}</c> entries (first
    /// match wins, matched against the group's name), then the declared default; kinds and ranges checked. Gradients and
    /// filters are accepted only for parameters declared <see cref="ParameterSpec.PerLayerGroup"/>; for the others a
    /// list of values of a text parameter is joined with commas (a list of names, as before contract 1.6). A filter that
    /// matches no layer group is refused, as a filter written for tensor names (<c>mlp</c>) would otherwise do nothing.
    /// Every problem is reported together, as <see cref="MergeConfigException"/>.
    /// </summary>
    /// <param name="component">How errors name the decorator, e.g. <c>decorator 'sens'</c>.</param>
    /// <param name="values">The config's values by parameter name.</param>
    /// <param name="specs">The decorator's declared parameters.</param>
    /// <param name="layerGroups">The model's layer groups in model order (<see cref="ResolvedInputs.LayerGroups"/>).</param>
    /// <param name="layerCount">The model's transformer blocks, for the depth of a block's group.</param>
    /// <returns>The values for the merge and for each group.</returns>
    public static DecoratorParameters Resolve(
        string component, IReadOnlyDictionary<string, ParameterValue> values, IReadOnlyList<ParameterSpec> specs, IReadOnlyList<string> layerGroups, int layerCount)
    {
        ArgumentNullException.ThrowIfNull(component);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(specs);
        ArgumentNullException.ThrowIfNull(layerGroups);
        var problems = ParameterResolver.UnknownNames(component, values.Keys, specs);
        var perGroup = specs.Where(s => s.PerLayerGroup).ToList();
        var merge = ParameterResolver.ResolveValues(
            component, specs.Where(s => !s.PerLayerGroup), name => OneValue(component, name, values.GetValueOrDefault(name), specs, problems), problems);
        foreach (var spec in perGroup)
        {
            if (values.GetValueOrDefault(spec.Name) is { } value)
            {
                problems.AddRange(UnmatchedFilters(component, spec.Name, value, layerGroups));
            }
        }

        var groups = new List<ResolvedParameters>(layerGroups.Count);
        foreach (var group in layerGroups)
        {
            double? depth = null;
            var where = $"{component} (layer group '{group}')";
            var own = ParameterResolver.ResolveValues(where, perGroup,
                name => values.GetValueOrDefault(name)?.Evaluate(group, () => depth ??= ParameterResolver.Depth(group, layerCount)), problems);
            foreach (var (name, value) in merge)
            {
                own[name] = value;
            }
            groups.Add(new ResolvedParameters(own, []));
        }
        // The merge-wide value of a per-group parameter: its first group's (a plain value is the same in every group).
        var first = layerGroups.Count > 0
            ? groups[0].Global
            : ParameterResolver.ResolveValues(component, perGroup, name => values.GetValueOrDefault(name)?.Evaluate(string.Empty, () => 0.0), problems);
        foreach (var spec in perGroup)
        {
            if (first.TryGetValue(spec.Name, out var value))
            {
                merge[spec.Name] = value;
            }
        }
        ParameterResolver.ThrowIfAny([.. problems.Distinct(StringComparer.Ordinal).Take(20)]);
        return new DecoratorParameters(new ResolvedParameters(merge, []), groups);
    }

    /// <summary>The one value of a parameter not declared per layer group; a gradient or filter list is a problem.</summary>
    private static object? OneValue(string component, string name, ParameterValue? value, IReadOnlyList<ParameterSpec> specs, List<string> problems)
    {
        switch (value)
        {
            case null:
                return null;
            case ScalarParameter scalar:
                return scalar.Value;
            case GradientParameter list when specs.First(s => s.Name == name).Kind == ParameterKind.String:
                return string.Join(",", list.Values.Select(v => Convert.ToString(v, CultureInfo.InvariantCulture)));
            default:
                var form = value is GradientParameter ? "a list interpolated over depth" : "a list of {filter, value}";
                var perGroup = specs.Where(s => s.PerLayerGroup).Select(s => s.Name).ToArray();
                problems.Add($"line {value.Line}: parameter '{name}' of {component} takes one value for the whole merge, not {form}"
                    + (perGroup.Length > 0 ? $" (the parameters that may vary by layer group: {string.Join(", ", perGroup)})" : " (none of its parameters varies by layer group)"));
                return null;
        }
    }

    /// <summary>The filters of <paramref name="value"/> (nested ones included) that match none of the layer groups.</summary>
    private static IEnumerable<string> UnmatchedFilters(string component, string name, ParameterValue value, IReadOnlyList<string> layerGroups)
    {
        if (value is not FilteredParameter filtered)
        {
            yield break;
        }
        foreach (var entry in filtered.Entries)
        {
            if (layerGroups.Count > 0 && !layerGroups.Any(entry.Matches))
            {
                yield return $"line {entry.Line}: filter '{entry.Filter}' of parameter '{name}' ({component}) matches no layer group: a decorator's "
                    + $"parameters vary by layer group, and filters are matched against the groups' names ({Sample(layerGroups)})";
            }
            foreach (var nested in UnmatchedFilters(component, name, entry.Value, layerGroups))
            {
                yield return nested;
            }
        }
    }

    private static string Sample(IReadOnlyList<string> layerGroups) =>
        layerGroups.Count <= 5 ? string.Join(", ", layerGroups) : string.Join(", ", layerGroups.Take(3)) + ", ..., " + layerGroups[^1];
}
