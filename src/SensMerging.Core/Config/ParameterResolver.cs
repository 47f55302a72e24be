using System.Globalization;
using SensMerging.Abstractions;

namespace SensMerging.Core.Config;

/// <summary>
/// Evaluates a config's parameters for one tensor against a component's declared <see cref="ParameterSpec"/>s:
/// per-model values fall back to the top-level ones, then to the spec's default (mergekit's lookup order); layer
/// gradients and filter lists are evaluated for the tensor; values are converted to the declared kind and checked
/// against the declared range. Unknown names, values of the wrong kind and out-of-range values are
/// <see cref="MergeConfigException"/>s naming the parameter, the model and the allowed values.
/// </summary>
public sealed class ParameterResolver
{
    private readonly MergeConfig _config;
    private readonly IReadOnlyList<ParameterSpec> _specs;
    private readonly ParameterSpec? _weightSpec;

    public ParameterResolver(MergeConfig config, IReadOnlyList<ParameterSpec> specs, bool requiresBaseModel)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(specs);
        _config = config;
        _specs = specs;
        _weightSpec = specs.FirstOrDefault(s => s.Name == "weight");
        Experts = config.Experts(requiresBaseModel);
        var problems = NameProblems();
        if (problems.Count > 0)
        {
            throw new MergeConfigException(config.SourcePath, problems);
        }
    }

    /// <summary>A resolver for <paramref name="strategy"/>'s parameters and model selection.</summary>
    public static ParameterResolver For(MergeConfig config, IMergeStrategy strategy)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        return new ParameterResolver(config, strategy.Parameters, strategy.Traits.RequiresBaseModel);
    }

    /// <summary>The models the strategy merges, in order (their indexes are the per-model indexes of the results).</summary>
    public IReadOnlyList<InputModel> Experts { get; }

    /// <summary>
    /// The depth mergekit gives a tensor for layer gradients: block b of n gets b / (n - 1) (1 when n = 1); every tensor
    /// outside the blocks, before them (embeddings) or after them (final norm, lm_head), gets 0, so it takes a
    /// gradient's FIRST value: mergekit since v0.1.2 plans those "pre" and "post" weights with t = 0 (plan.py);
    /// v0.1.1 and earlier gave the post weights the last value.
    /// </summary>
    public static double Depth(string tensorName, int layerCount)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        var block = LayerGroups.BlockIndex(tensorName);
        if (block < 0)
        {
            return 0.0;
        }
        if (layerCount <= 0 || block >= layerCount)
        {
            throw new ArgumentOutOfRangeException(nameof(layerCount),
                $"tensor '{tensorName}' is in block {block} but the model has {layerCount} blocks; the layer count is needed for layer gradients");
        }
        return layerCount == 1 ? 1.0 : block / (double)(layerCount - 1);
    }

    /// <summary>Global and per-model values for one tensor, defaults applied.</summary>
    public ResolvedParameters Resolve(string tensorName, int layerCount)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        var depth = DepthOf(tensorName, layerCount);
        var global = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var spec in _specs.Where(s => s.Scope == ParameterScope.Global))
        {
            var raw = Evaluate(_config.Parameters, spec.Name, tensorName, depth) ?? spec.Default;
            if (raw is not null)
            {
                global[spec.Name] = Convert(spec, raw, null, tensorName);
            }
            else
            {
                throw Error($"merge method '{_config.MergeMethod}' needs parameter '{spec.Name}' ({spec.Description}); set it under 'parameters'");
            }
        }
        var perModel = new IReadOnlyDictionary<string, object>[Experts.Count];
        for (var i = 0; i < Experts.Count; i++)
        {
            var values = new Dictionary<string, object>(StringComparer.Ordinal);
            foreach (var spec in _specs.Where(s => s.Scope == ParameterScope.PerModel))
            {
                values[spec.Name] = ModelValue(spec, i, tensorName, depth);
            }
            perModel[i] = values;
        }
        return new ResolvedParameters(global, perModel);
    }

    /// <summary>The configured weight of each expert for one tensor (parameter <c>weight</c>, default 1).</summary>
    public double[] Weights(string tensorName, int layerCount) => WeightsOf(Resolve(tensorName, layerCount));

    /// <summary>The experts' weights in one tensor's resolved parameters (<c>weight</c> when the strategy declares it, else 1).</summary>
    public double[] WeightsOf(ResolvedParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var weights = new double[Experts.Count];
        if (_weightSpec is null)
        {
            Array.Fill(weights, 1.0);
            return weights;
        }
        for (var i = 0; i < weights.Length; i++)
        {
            weights[i] = parameters.Float(_weightSpec.Name, i);
        }
        return weights;
    }

    /// <summary>
    /// Checks everything before any output is written: the model count against the strategy's traits, the base model,
    /// the slice range against the layer count, and every parameter of every tensor. All problems are reported together.
    /// Returns what it resolved (each tensor's parameters and weights, by tensor name), so the merge uses these values and
    /// never resolves a tensor's parameters a second time.
    /// </summary>
    public static IReadOnlyDictionary<string, TensorParameters> Validate(MergeConfig config, IMergeStrategy strategy, IEnumerable<string> tensorNames, int layerCount)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(tensorNames);
        var problems = new List<string>();
        var traits = strategy.Traits;
        if (!string.Equals(config.MergeMethod, strategy.Name, StringComparison.Ordinal))
        {
            problems.Add($"the config's merge_method is '{config.MergeMethod}' but the strategy is '{strategy.Name}'");
        }
        problems.AddRange(traits.CountProblems(strategy.Name, config.BaseModel is not null, config.Experts(traits.RequiresBaseModel).Count));
        if (config.LayerRange is { } range && layerCount > 0 && (range.Start != 0 || range.End != layerCount))
        {
            problems.Add($"the slice covers layers [{range.Start}, {range.End}] but the model has {layerCount}; only a slice covering all layers [0, {layerCount}] is supported");
        }
        if (problems.Count > 0)
        {
            throw new MergeConfigException(config.SourcePath, problems);
        }
        return Validate(config, strategy.Parameters, traits.RequiresBaseModel, tensorNames, layerCount);
    }

    /// <summary>
    /// Checks the parameters of every tensor against <paramref name="specs"/> (names, kinds, ranges) and returns each
    /// tensor's resolved parameters and weights.
    /// </summary>
    public static IReadOnlyDictionary<string, TensorParameters> Validate(MergeConfig config, IReadOnlyList<ParameterSpec> specs, bool requiresBaseModel, IEnumerable<string> tensorNames, int layerCount)
    {
        ArgumentNullException.ThrowIfNull(tensorNames);
        var resolver = new ParameterResolver(config, specs, requiresBaseModel);
        var problems = new List<string>();
        var resolved = new Dictionary<string, TensorParameters>(StringComparer.Ordinal);
        foreach (var name in tensorNames)
        {
            try
            {
                var parameters = resolver.Resolve(name, layerCount);
                resolved[name] = new TensorParameters(parameters, resolver.WeightsOf(parameters));
            }
            catch (MergeConfigException e)
            {
                foreach (var problem in e.Problems)
                {
                    if (!problems.Contains(problem) && problems.Count < 20)
                    {
                        problems.Add(problem);
                    }
                }
            }
            catch (ArgumentOutOfRangeException e)
            {
                if (problems.Count < 20)
                {
                    problems.Add(e.Message);
                }
            }
        }
        if (problems.Count > 0)
        {
            throw new MergeConfigException(config.SourcePath, problems);
        }
        return resolved;
    }

    /// <summary>
    /// Resolves a decorator's (or scorer's) configured values against its specs: defaults, kinds, ranges, unknown
    /// names. Lists are accepted for text parameters and joined with commas.
    /// </summary>
    public static ResolvedParameters ResolveComponent(string component, IReadOnlyDictionary<string, object> values, IReadOnlyList<ParameterSpec> specs)
    {
        ArgumentNullException.ThrowIfNull(component);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(specs);
        var problems = UnknownNames(component, values.Keys, specs);
        var result = ResolveValues(component, specs, name => values.GetValueOrDefault(name), problems);
        ThrowIfAny(problems);
        return new ResolvedParameters(result, []);
    }

    /// <summary>
    /// What the host hands <paramref name="strategy"/> for values given in code rather than in a config (embedding
    /// applications, tests, benchmarks): the same defaults, kinds, ranges and unknown-name refusals as a config's, with
    /// per-model values falling back to <paramref name="global"/>, then to the declared default. Layer gradients and
    /// filters do not apply (the values are plain).
    /// </summary>
    public static ResolvedParameters ResolveDirect(
        IMergeStrategy strategy, int models, IReadOnlyDictionary<string, object>? global = null, IReadOnlyList<IReadOnlyDictionary<string, object>>? perModel = null)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentOutOfRangeException.ThrowIfNegative(models);
        if (perModel is not null && perModel.Count != models)
        {
            throw new ArgumentException($"{perModel.Count} per-model value sets for {models} models", nameof(perModel));
        }
        global ??= new Dictionary<string, object>();
        var specs = strategy.Parameters;
        var problems = UnknownNames(strategy.Name, global.Keys, specs);
        var globalSpecs = specs.Where(s => s.Scope == ParameterScope.Global).ToList();
        var modelSpecs = specs.Where(s => s.Scope == ParameterScope.PerModel).ToList();
        var resolvedGlobal = ResolveValues(strategy.Name, globalSpecs, name => global.GetValueOrDefault(name), problems);
        var resolvedModels = new List<IReadOnlyDictionary<string, object>>(models);
        for (var i = 0; i < models; i++)
        {
            var own = perModel?[i] ?? new Dictionary<string, object>();
            var component = $"{strategy.Name} (model {i})";
            problems.AddRange(UnknownNames(component, own.Keys, modelSpecs));
            resolvedModels.Add(ResolveValues(component, modelSpecs, name => own.GetValueOrDefault(name) ?? global.GetValueOrDefault(name), problems));
        }
        ThrowIfAny(problems);
        return new ResolvedParameters(resolvedGlobal, resolvedModels);
    }

    internal static List<string> UnknownNames(string component, IEnumerable<string> names, IReadOnlyList<ParameterSpec> specs) =>
        [.. names.Where(k => specs.All(s => s.Name != k)).Select(name => $"'{name}' is not a parameter of {component} (known: {Known(specs)})")];

    /// <summary>Each spec's given value (or its default) converted to its kind and checked against its range.</summary>
    internal static Dictionary<string, object> ResolveValues(string component, IEnumerable<ParameterSpec> specs, Func<string, object?> given, List<string> problems)
    {
        var result = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var spec in specs)
        {
            var raw = given(spec.Name) ?? spec.Default;
            if (raw is IEnumerable<object> list && spec.Kind == ParameterKind.String)
            {
                raw = string.Join(",", list.Select(v => System.Convert.ToString(v, CultureInfo.InvariantCulture)));
            }
            if (raw is null)
            {
                problems.Add($"{component} needs parameter '{spec.Name}' ({spec.Description})");
                continue;
            }
            try
            {
                result[spec.Name] = ConvertValue(spec, raw, component);
            }
            catch (MergeConfigException e)
            {
                problems.Add(e.Message);
            }
        }
        return result;
    }

    internal static void ThrowIfAny(List<string> problems)
    {
        if (problems.Count > 0)
        {
            throw new MergeConfigException(null, problems);
        }
    }

    private object ModelValue(ParameterSpec spec, int model, string tensorName, Func<double> depth)
    {
        var raw = Evaluate(Experts[model].Parameters, spec.Name, tensorName, depth)
            ?? Evaluate(_config.Parameters, spec.Name, tensorName, depth)
            ?? spec.Default;
        if (raw is null)
        {
            throw Error($"model '{Experts[model].Model}' needs parameter '{spec.Name}' ({spec.Description}); set it in its 'parameters' or the top-level ones");
        }
        return Convert(spec, raw, Experts[model].Model.Text, tensorName);
    }

    private static object? Evaluate(IReadOnlyDictionary<string, ParameterValue> values, string name, string tensorName, Func<double> depth) =>
        values.TryGetValue(name, out var value) ? value.Evaluate(tensorName, depth) : null;

    private static Func<double> DepthOf(string tensorName, int layerCount)
    {
        double? cached = null;
        return () => cached ??= Depth(tensorName, layerCount);
    }

    private object Convert(ParameterSpec spec, object raw, string? model, string tensorName)
    {
        var where = model is null ? $"merge method '{_config.MergeMethod}'" : $"model '{model}'";
        try
        {
            return ConvertValue(spec, raw, where);
        }
        catch (MergeConfigException e)
        {
            throw Error($"{e.Message} (tensor '{tensorName}')");
        }
    }

    internal static object ConvertValue(ParameterSpec spec, object raw, string where)
    {
        object value;
        switch (spec.Kind)
        {
            case ParameterKind.Float when raw is double or long:
                value = System.Convert.ToDouble(raw, CultureInfo.InvariantCulture);
                break;
            case ParameterKind.Integer when raw is long:
                value = raw;
                break;
            case ParameterKind.Integer when raw is double d && Math.Abs(d - Math.Round(d)) < 1e-9 && Math.Abs(d) < 9e15:
                value = (long)Math.Round(d);
                break;
            case ParameterKind.Boolean when raw is bool:
                value = raw;
                break;
            case ParameterKind.String:
                value = System.Convert.ToString(raw, CultureInfo.InvariantCulture) ?? string.Empty;
                break;
            default:
                throw new MergeConfigException(
                    $"parameter '{spec.Name}' of {where} must be {KindName(spec.Kind)}, got '{System.Convert.ToString(raw, CultureInfo.InvariantCulture)}'");
        }
        if (value is double or long)
        {
            var number = System.Convert.ToDouble(value, CultureInfo.InvariantCulture);
            if (!double.IsFinite(number))
            {
                throw new MergeConfigException($"parameter '{spec.Name}' of {where} is {number.ToString(CultureInfo.InvariantCulture)}, not a finite number");
            }
            if ((spec.Minimum is { } min && number < min) || (spec.Maximum is { } max && number > max))
            {
                throw new MergeConfigException(
                    $"parameter '{spec.Name}' of {where} is {number.ToString(CultureInfo.InvariantCulture)}, outside the allowed range {RangeText(spec)}");
            }
        }
        if (value is string text && spec.AllowedValues.Count > 0 && !spec.AllowedValues.Contains(text))
        {
            throw new MergeConfigException($"parameter '{spec.Name}' of {where} is '{text}'; allowed: {string.Join(", ", spec.AllowedValues)}");
        }
        return value;
    }

    private List<string> NameProblems()
    {
        var problems = new List<string>();
        foreach (var (name, value) in _config.Parameters)
        {
            if (_specs.All(s => s.Name != name))
            {
                problems.Add($"line {value.Line}: '{name}' is not a parameter of merge method '{_config.MergeMethod}' (known: {Known(_specs)})");
            }
        }
        foreach (var model in _config.Models)
        {
            foreach (var (name, value) in model.Parameters)
            {
                var spec = _specs.FirstOrDefault(s => s.Name == name);
                if (spec is null)
                {
                    problems.Add($"line {value.Line}: '{name}' (model '{model.Model}') is not a parameter of merge method '{_config.MergeMethod}' (known: {Known(_specs)})");
                }
                else if (spec.Scope == ParameterScope.Global)
                {
                    problems.Add($"line {value.Line}: parameter '{name}' of merge method '{_config.MergeMethod}' has one value for the whole merge; set it under the top-level 'parameters', not for model '{model.Model}'");
                }
            }
        }
        return problems;
    }

    private MergeConfigException Error(string message) => new(_config.SourcePath, [message]);

    private static string Known(IReadOnlyList<ParameterSpec> specs) =>
        specs.Count == 0 ? "none" : string.Join(", ", specs.Select(s => s.Name));

    private static string KindName(ParameterKind kind) => kind switch
    {
        ParameterKind.Float => "a number",
        ParameterKind.Integer => "an integer",
        ParameterKind.Boolean => "true or false",
        _ => "text",
    };

    private static string RangeText(ParameterSpec spec) =>
        $"[{(spec.Minimum is { } min ? min.ToString(CultureInfo.InvariantCulture) : "-inf")}, {(spec.Maximum is { } max ? max.ToString(CultureInfo.InvariantCulture) : "inf")}]";
}

/// <summary>One tensor's resolved parameters and the experts' weights in it (<see cref="ParameterResolver.Validate(MergeConfig, IMergeStrategy, IEnumerable{string}, int)"/>).</summary>
public sealed record TensorParameters(ResolvedParameters Parameters, IReadOnlyList<double> Weights);
