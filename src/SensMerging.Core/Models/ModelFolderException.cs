namespace SensMerging.Core.Models;

/// <summary>A model folder that cannot be used (missing files, inconsistent index, bad config); the message says why.</summary>
public sealed class ModelFolderException : Exception
{
    public ModelFolderException()
    {
    }

    public ModelFolderException(string message)
        : base(message)
    {
    }

    public ModelFolderException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
