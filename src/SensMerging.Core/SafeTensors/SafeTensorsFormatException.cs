namespace SensMerging.Core.SafeTensors;

/// <summary>A safetensors file (or sharded index) that breaks the format; the message names the file and the problem.</summary>
public sealed class SafeTensorsFormatException : Exception
{
    public SafeTensorsFormatException()
    {
    }

    public SafeTensorsFormatException(string message)
        : base(message)
    {
    }

    public SafeTensorsFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The file the problem was found in, when known.</summary>
    public string? FilePath { get; init; }

    internal static SafeTensorsFormatException In(string path, string problem, Exception? inner = null) =>
        inner is null
            ? new($"{path}: {problem}") { FilePath = path }
            : new($"{path}: {problem}", inner) { FilePath = path };
}
