namespace SensMerging.Abstractions;

/// <summary>What every component a plugin registers says about itself.</summary>
public interface IPluginComponent
{
    /// <summary>
    /// The name configs use, lower_snake_case (for example <c>ties</c>, <c>sens</c>, <c>sensitivity</c>). A merge config's
    /// <c>merge_method</c> must equal a strategy's Name (ordinal comparison), not the id of the plugin that registers it;
    /// decorators and scorers are also looked up by this Name. Within a kind (strategy, scorer, decorator) a Name must be
    /// unique among the loaded plugins: a plugin whose component reuses a Name another plugin provides is refused as a conflict.
    /// </summary>
    string Name { get; }

    /// <summary>One sentence for <c>sensmerge plugins list</c>.</summary>
    string Description { get; }

    /// <summary>The parameters the component reads; the host validates configs against them.</summary>
    IReadOnlyList<ParameterSpec> Parameters { get; }
}
