namespace SensMerging.Core.Config;

/// <summary>A merge configuration that cannot run: every problem found, each with its line when known.</summary>
public sealed class MergeConfigException : Exception
{
    public MergeConfigException()
        : this("invalid merge configuration")
    {
    }

    public MergeConfigException(string message)
        : this(message, (Exception?)null)
    {
    }

    public MergeConfigException(string message, Exception? innerException)
        : base(message, innerException)
    {
        Problems = [message];
    }

    public MergeConfigException(string? source, IReadOnlyList<string> problems)
        : base(Format(source, problems))
    {
        Problems = problems;
    }

    /// <summary>The individual problems (one line each).</summary>
    public IReadOnlyList<string> Problems { get; }

    private static string Format(string? source, IReadOnlyList<string> problems)
    {
        ArgumentNullException.ThrowIfNull(problems);
        var where = string.IsNullOrEmpty(source) ? "merge config" : source;
        return problems.Count == 1
            ? $"{where}: {problems[0]}"
            : $"{where}: {problems.Count} problems:{Environment.NewLine}  - " + string.Join(Environment.NewLine + "  - ", problems);
    }
}
