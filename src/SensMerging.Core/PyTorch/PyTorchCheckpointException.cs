namespace SensMerging.Core.PyTorch;

/// <summary>A PyTorch <c>.bin</c> checkpoint that cannot be read or is refused (not a zip archive, a forbidden pickle global...); the message says why.</summary>
public sealed class PyTorchCheckpointException : Exception
{
    public PyTorchCheckpointException()
    {
    }

    public PyTorchCheckpointException(string message)
        : base(message)
    {
    }

    public PyTorchCheckpointException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The file the problem is in, when known.</summary>
    public string? FilePath { get; init; }

    internal static PyTorchCheckpointException In(string path, string problem) => new($"{path}: {problem}") { FilePath = path };
}
