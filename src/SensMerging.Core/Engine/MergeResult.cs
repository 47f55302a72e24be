namespace SensMerging.Core.Engine;

/// <summary>Progress of a running merge.</summary>
/// <param name="TensorsDone">Output tensors completely written.</param>
/// <param name="TensorsTotal">Output tensors in all.</param>
/// <param name="BytesRead">Input bytes read so far.</param>
/// <param name="BytesWritten">Output tensor bytes written so far.</param>
/// <param name="BytesTotal">Output tensor bytes in all.</param>
/// <param name="Elapsed">Time since the merge started streaming.</param>
/// <param name="CurrentTensor">The tensor written last.</param>
public sealed record MergeProgress(int TensorsDone, int TensorsTotal, long BytesRead, long BytesWritten, long BytesTotal, TimeSpan Elapsed, string? CurrentTensor);

/// <summary>A file of the merged model.</summary>
/// <param name="RelativePath">Path inside the output folder.</param>
/// <param name="Size">Bytes.</param>
/// <param name="Sha256">Lower-case hex SHA-256 (empty when hashing was off).</param>
public sealed record MergedFile(string RelativePath, long Size, string Sha256);

/// <summary>What a merge produced.</summary>
/// <param name="OutputPath">The finished folder.</param>
/// <param name="Files">Every file in it.</param>
/// <param name="TotalBytes">Sum of the files' sizes.</param>
/// <param name="TensorCount">Tensors written.</param>
/// <param name="BytesRead">Input tensor bytes read.</param>
/// <param name="TensorBytesWritten">Output tensor bytes written.</param>
/// <param name="ValidationDuration">Checking inputs and parameters.</param>
/// <param name="MergeDuration">Streaming the tensors.</param>
/// <param name="TotalDuration">Everything, including copying files and moving the folder into place.</param>
/// <param name="Stages">Where the streaming time went, summed over workers.</param>
public sealed record MergeResult(
    string OutputPath,
    IReadOnlyList<MergedFile> Files,
    long TotalBytes,
    int TensorCount,
    long BytesRead,
    long TensorBytesWritten,
    TimeSpan ValidationDuration,
    TimeSpan MergeDuration,
    TimeSpan TotalDuration,
    MergeStageTimes Stages)
{
    /// <summary>Problems in the input data the merge went through with (already logged): tensors of an input the reference lacks, then NaN/Inf counts per tensor and input.</summary>
    public IReadOnlyList<MergeDataWarning> Warnings { get; init; } = [];
}

/// <summary>
/// Time spent per stage, summed over workers (so with two workers the sum can exceed the wall time): reading inputs
/// (including the conversion to float32), the strategy's math, converting the output, waiting for a free output buffer
/// (<c>WaitForTurn</c>: the writer still writing the worker's earlier outputs), and writing (including hashing; on the
/// writer thread, in the order outputs finish, at their place in the files, concurrently with the workers).
/// </summary>
public sealed record MergeStageTimes(TimeSpan Read, TimeSpan Merge, TimeSpan Convert, TimeSpan WaitForTurn, TimeSpan Write)
{
    /// <summary>Part of <see cref="Write"/> spent hashing (SHA-256), including reading back pieces written ahead of the hash frontier.</summary>
    public TimeSpan Hash { get; init; }

    /// <summary>Output bytes read back from the files to be hashed (pieces that finished ahead of earlier ones).</summary>
    public long HashReadBackBytes { get; init; }
}

/// <summary>A merge that cannot run as planned (found before any output is written); the message lists the problems.</summary>
public sealed class MergeValidationException : Exception
{
    public MergeValidationException()
    {
    }

    public MergeValidationException(string message)
        : base(message)
    {
    }

    public MergeValidationException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Each problem found.</summary>
    public IReadOnlyList<string> Problems { get; init; } = [];
}
