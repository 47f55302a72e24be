namespace SensMerging.Abstractions;

/// <summary>What every component a plugin registers says about itself.</summary>
public interface IPluginComponent
{
    /// <summary>The name configs use, lower_snake_case (for example <c>ties</c>, <c>sens</c>, <c>sensitivity</c>).</summary>
    string Name { get; }

    /// <summary>One sentence for <c>sensmerge plugins list</c>.</summary>
    string Description { get; }

    /// <summary>The parameters the component reads; the host validates configs against them.</summary>
    IReadOnlyList<ParameterSpec> Parameters { get; }
}
